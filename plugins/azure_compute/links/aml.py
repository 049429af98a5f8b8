"""Extra link from Azure ML operators and sensors to the job's page in Azure ML studio."""
from __future__ import annotations

from azure_compute.links.base import PersistedLink

#: XCom key under which an operator records its job's studio URL.
STUDIO_URL_XCOM_KEY = "azure_ml_studio_url"


class AzureMLStudioJobLink(PersistedLink):
    """'Azure ML Studio' button: the job page the task recorded when it submitted or found the job."""

    name = "Azure ML Studio"
    key = STUDIO_URL_XCOM_KEY
