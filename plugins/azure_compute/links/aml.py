"""Extra link from Azure ML operators and sensors to the job's page in Azure ML studio."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey

#: XCom key under which an operator records its job's studio URL.
STUDIO_URL_XCOM_KEY = "azure_ml_studio_url"


class AzureMLStudioJobLink(BaseOperatorLink):
    """'Azure ML Studio' button: the job page the task recorded when it submitted or found the job."""

    name = "Azure ML Studio"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        url = XCom.get_value(key=STUDIO_URL_XCOM_KEY, ti_key=ti_key)
        return url or ""

    @staticmethod
    def persist(context: Any, url: str) -> None:
        """Record the URL for the current task instance (call it as soon as the job is known)."""
        context["ti"].xcom_push(key=STUDIO_URL_XCOM_KEY, value=url)
