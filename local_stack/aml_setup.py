"""Register the product's datastores in an Azure ML workspace through `MLClient`, as a user does.

A workspace has only ``workspaceblobstore`` until someone registers more; the local
endpoint is no different. `make local-up` calls `register_blob_datastores` against the
local endpoint with Azurite's account; the README shows the same call (and the CLI
equivalent) for a real workspace.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def register_blob_datastores(
    client: Any,
    account_name: str,
    account_key: str,
    datastores: Mapping[str, str],
    *,
    protocol: str = "https",
    endpoint: str = "core.windows.net",
) -> list[str]:
    """Create or update one Azure Blob datastore per ``name -> container``; returns the names."""
    from azure.ai.ml.entities import AccountKeyConfiguration, AzureBlobDatastore

    for name, container in datastores.items():
        client.datastores.create_or_update(
            AzureBlobDatastore(
                name=name,
                description=f"container {container} of account {account_name}",
                account_name=account_name,
                container_name=container,
                protocol=protocol,
                endpoint=endpoint,
                credentials=AccountKeyConfiguration(account_key=account_key),
            )
        )
    return list(datastores)


def local_ml_client(url: str, token: str, subscription_id: str, resource_group: str, workspace: str) -> Any:
    """An `MLClient` for the local endpoint (the same client the Airflow hook builds)."""
    import sys

    plugins = str(Path(__file__).resolve().parents[1] / "plugins")
    if plugins not in sys.path:  # Airflow puts plugins/ on its path; `python -m ...stack` may not have it
        sys.path.append(plugins)
    from azure_compute.hooks.aml import (
        StaticTokenCredential, _LoopbackBearerTokenPolicy, cloud_metadata_for, forget_inherited_custom_cloud,
    )

    forget_inherited_custom_cloud()
    from azure.ai.ml import MLClient

    credential = StaticTokenCredential(token)
    return MLClient(
        credential=credential,
        subscription_id=subscription_id,
        resource_group_name=resource_group,
        workspace_name=workspace,
        cloud=f"Custom@{url.rstrip('/')}",
        cloud_metadata=cloud_metadata_for(url),
        enable_telemetry=False,
        show_progress=False,
        authentication_policy=_LoopbackBearerTokenPolicy(credential, url.rstrip("/") + "/.default"),
    )
