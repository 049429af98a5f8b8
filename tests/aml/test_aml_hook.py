"""AzureMLHook against the local Azure ML endpoint, through the real MLClient over HTTP."""
from __future__ import annotations

import json

import pytest
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError

from azure_compute.hooks.aml import AzureMLHook, StaticTokenCredential, studio_job_url


def test_hook_reaches_the_workspace(aml_conn_id: str, local_aml) -> None:
    hook = AzureMLHook(aml_conn_id)
    workspace = hook.client.workspaces.get(local_aml.workspace)
    assert workspace.name == local_aml.workspace
    assert hook.test_connection() == (True, f"workspace {local_aml.workspace} reachable")


def test_default_datastore_and_input_datastore_map_to_azurite(aml_conn_id: str) -> None:
    client = AzureMLHook(aml_conn_id).client
    default = client.datastores.get_default()
    assert default.name == "workspaceblobstore"
    assert default.container_name == "azureml-blobstore"
    images = client.datastores.get("images", include_secrets=True)
    assert images.container_name == "aml-test-images"
    assert images.credentials.account_key  # listSecrets hands out Azurite's key



def test_the_hook_names_the_storage_behind_a_datastore(aml_conn_id: str) -> None:
    """What the merge step needs to find the output file: the account, endpoint and container, no secret."""
    hook = AzureMLHook(aml_conn_id)
    location = hook.datastore_location("images")
    assert location["container"] == "aml-test-images" and location["account_name"] and location["endpoint"]
    assert not getattr(hook.get_datastore("images").credentials, "account_key", None)
    assert hook.get_datastore("images", include_secrets=True).credentials.account_key
    assert hook.find_compute("no-such-cluster") is None


def test_wrong_token_gets_a_clear_authentication_error(local_aml, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AZURE_ML_BAD", local_aml.connection_json(token="not-the-token"))
    hook = AzureMLHook("azure_ml_bad")
    with pytest.raises(ClientAuthenticationError, match="InvalidAuthenticationToken"):
        hook.client.jobs.get("anything")
    ok, message = hook.test_connection()
    assert not ok and "access token is invalid" in message


def test_unknown_job_is_not_found(aml_conn_id: str) -> None:
    hook = AzureMLHook(aml_conn_id)
    assert hook.find_job("no-such-job") is None
    with pytest.raises(ResourceNotFoundError):
        hook.get_job("no-such-job")


def test_missing_workspace_fields_are_named(monkeypatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZURE_ML_INCOMPLETE",
        json.dumps({"conn_type": "azure_ml", "extra": {"subscription_id": "s"}}),
    )
    with pytest.raises(ValueError, match="'azure_ml_incomplete' lacks extra field.*resource_group, workspace_name"):
        AzureMLHook("azure_ml_incomplete").get_conn()


def test_service_principal_needs_a_tenant(monkeypatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZURE_ML_SP",
        json.dumps(
            {
                "conn_type": "azure_ml",
                "login": "client-id",
                "password": "client-secret",
                "extra": {"subscription_id": "s", "resource_group": "r", "workspace_name": "w"},
            }
        ),
    )
    with pytest.raises(ValueError, match="tenant_id"):
        AzureMLHook("azure_ml_sp").get_credential()


def test_credential_choice_follows_the_connection(monkeypatch) -> None:
    from azure.identity import ClientSecretCredential, DefaultAzureCredential, ManagedIdentityCredential

    base = {"subscription_id": "s", "resource_group": "r", "workspace_name": "w"}
    cases = {
        "azure_ml_spn": ({"login": "id", "password": "secret", "extra": {**base, "tenant_id": "t"}}, ClientSecretCredential),
        "azure_ml_mi": ({"extra": {**base, "managed_identity_client_id": "mi"}}, ManagedIdentityCredential),
        "azure_ml_dac": ({"extra": base}, DefaultAzureCredential),
        "azure_ml_static": (
            {"password": "tok", "extra": {**base, "auth": "static_token", "resource_manager_url": "http://127.0.0.1:1/"}},
            StaticTokenCredential,
        ),
    }
    for conn_id, (conn, expected) in cases.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "azure_ml", **conn}))
        assert isinstance(AzureMLHook(conn_id).get_credential(), expected), conn_id


def test_static_token_is_refused_for_a_remote_endpoint(monkeypatch) -> None:
    extra = {"subscription_id": "s", "resource_group": "r", "workspace_name": "w", "auth": "static_token",
             "resource_manager_url": "https://management.azure.com/"}
    monkeypatch.setenv("AIRFLOW_CONN_AZURE_ML_REMOTE_STATIC",
                       json.dumps({"conn_type": "azure_ml", "password": "tok", "extra": extra}))
    with pytest.raises(ValueError, match="only for the local endpoint"):
        AzureMLHook("azure_ml_remote_static").get_credential()


def test_password_is_masked_in_logs(aml_conn_id: str, local_aml) -> None:
    from airflow.sdk._shared.secrets_masker.secrets_masker import redact

    AzureMLHook(aml_conn_id).get_conn()
    assert local_aml.token not in str(redact(f"token is {local_aml.token}"))


def test_studio_url_names_the_workspace() -> None:
    url = studio_job_url("job-1", "sub", "rg", "ws")
    assert url == (
        "https://ml.azure.com/runs/job-1?wsid=/subscriptions/sub/resourceGroups/rg"
        "/providers/Microsoft.MachineLearningServices/workspaces/ws"
    )
