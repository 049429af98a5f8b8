"""Airflow hook for Azure Machine Learning: an authenticated `azure.ai.ml.MLClient`.

The connection (conn_type ``azure_ml``) names the workspace and how to sign in:

- extras ``subscription_id``, ``resource_group``, ``workspace_name`` (required);
- login/password = service principal client id/secret (+ extra ``tenant_id``, and
  ``authority_host`` for a sovereign cloud) -> ``ClientSecretCredential``;
- else extra ``managed_identity_client_id`` -> ``ManagedIdentityCredential``;
- else extra ``auth`` = ``static_token`` with a shared secret in the password -> tokens
  signed with that secret (only for the local Azure ML endpoint of the embedded stack);
- else ``DefaultAzureCredential``.

Extra ``resource_manager_url`` (e.g. ``http://127.0.0.1:8765/``) points every ARM call
of the MLClient at another endpoint (a sovereign cloud, or our local endpoint); extra
``cloud`` names a built-in cloud (``AzureCloud``, ``AzureChinaCloud``, ...) instead.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from functools import cached_property
from typing import Any
from urllib.parse import urlparse

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenCredential
from azure.core.pipeline.policies import BearerTokenCredentialPolicy

#: Azure ML job states, as the service reports them. The SDK's own terminal set
#: (azure/ai/ml/operations/_run_history_constants.py TERMINAL_STATUSES) also holds NotResponding
#: (no heartbeat from the job) and Paused: a wait must end on them too, not run into its timeout.
JOB_SUCCESS_STATES = frozenset({"Completed"})
JOB_FAILURE_STATES = frozenset({"Failed", "Canceled", "NotResponding", "Paused"})
JOB_TERMINAL_STATES = JOB_SUCCESS_STATES | JOB_FAILURE_STATES
#: What a wait that ends in a state other than Failed tells the user.
JOB_STATE_HINTS = {
    "Canceled": "the job was canceled",
    "NotResponding": "the job stopped sending heartbeats (NotResponding); check its nodes and logs in studio, "
                     "then cancel and rerun it",
    "Paused": "the job is Paused; resume or cancel it in studio",
}

STUDIO_URL = "https://ml.azure.com"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOCAL_TENANT_ID = "00000000-0000-0000-0000-000000000000"
_REQUIRED_EXTRAS = ("subscription_id", "resource_group", "workspace_name")



def forget_inherited_custom_cloud() -> None:
    """Drop a ``Custom@...`` cloud name inherited through ``AZUREML_CURRENT_CLOUD``.

    MLClient writes the cloud it was given into that variable process-wide, and child processes
    inherit it; importing ``azure.ai.ml`` in a process that never registered that custom cloud
    fails with "Unknown cloud environment". Every client we build names its cloud, so the
    inherited value is never needed.
    """
    if os.environ.get("AZUREML_CURRENT_CLOUD", "").startswith("Custom@"):
        os.environ.pop("AZUREML_CURRENT_CLOUD")

class StaticTokenCredential(TokenCredential):
    """A shared-secret credential for the local Azure ML endpoint (never for Azure).

    MLClient reads claims from its tokens (``aud`` must name the scope, ``tid`` the
    tenant), so the secret is not sent as is: each token is a JWT for the requested
    scope, signed (HS256) with a key derived from the secret. The endpoint checks the
    signature with the same secret; a wrong secret gets 401.
    """

    def __init__(self, secret: str, lifetime_seconds: int = 3600) -> None:
        if not secret:
            raise ValueError("static_token auth needs the token in the connection password")
        self._key = signing_key(secret)
        self._lifetime = lifetime_seconds

    def _token(self, scopes: tuple[str, ...]) -> tuple[str, int]:
        import jwt

        now = int(time.time())
        expires = now + self._lifetime
        audience = scopes[0].removesuffix("/.default") if scopes else ""
        claims = {"aud": audience, "iss": "local-azure-ml", "tid": LOCAL_TENANT_ID, "oid": LOCAL_TENANT_ID,
                  "iat": now, "exp": expires}
        return jwt.encode(claims, self._key, algorithm="HS256"), expires

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(*self._token(scopes))

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(*self._token(scopes))


def signing_key(secret: str) -> bytes:
    """The HS256 key for a shared secret (the local endpoint derives it the same way)."""
    return hashlib.sha256(secret.encode()).digest()


class _LoopbackBearerTokenPolicy(BearerTokenCredentialPolicy):
    """Bearer auth that allows plain http, used only for an endpoint on loopback.

    azure-core refuses to send a token over http; the local endpoint listens on
    127.0.0.1 without TLS, so for loopback URLs (and nothing else) we lift that check.
    """

    def on_request(self, request: Any) -> None:
        request.context.options["enforce_https"] = False
        super().on_request(request)


def is_loopback_http(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme == "http" and (parsed.hostname or "") in _LOOPBACK_HOSTS


def cloud_metadata_for(resource_manager_url: str) -> dict[str, str]:
    """Cloud metadata that makes MLClient send its ARM calls to resource_manager_url."""
    base = resource_manager_url.rstrip("/") + "/"
    return {
        "azure_portal": base,
        "resource_manager": base,
        "active_directory": base,
        "aml_resource_id": base,
        "storage_endpoint": "core.windows.net",
        "registry_discovery_endpoint": base,
    }


class AzureMLHook(BaseHook):
    """Interact with an Azure Machine Learning workspace through `azure.ai.ml.MLClient`.

    :param azure_ml_conn_id: Airflow connection of type ``azure_ml``.
    """

    conn_name_attr = "azure_ml_conn_id"
    default_conn_name = "azure_ml_default"
    conn_type = "azure_ml"
    hook_name = "Azure Machine Learning"

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields on the connection form."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import StringField

        def field(label: str) -> StringField:
            return StringField(lazy_gettext(label), widget=BS3TextFieldWidget())

        return {
            "subscription_id": field("Subscription ID"),
            "resource_group": field("Resource group"),
            "workspace_name": field("Workspace name"),
            "tenant_id": field("Tenant ID"),
            "managed_identity_client_id": field("Managed Identity Client ID"),
            "resource_manager_url": field("Resource manager URL (custom cloud / local endpoint)"),
            "cloud": field("Cloud name (AzureCloud, AzureChinaCloud, AzureUSGovernment)"),
            "auth": field("Auth (empty, or static_token for the local endpoint)"),
        }

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel login/password for a service principal; hide unused fields."""
        return {
            "hidden_fields": ["schema", "port", "host"],
            "relabeling": {"login": "Client ID", "password": "Client secret (or static token)"},
            "placeholders": {
                "extra": '{"subscription_id": "...", "resource_group": "...", "workspace_name": "..."}',
                "resource_manager_url": "https://management.azure.com/",
            },
        }

    def __init__(self, azure_ml_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.azure_ml_conn_id = azure_ml_conn_id

    @cached_property
    def _connection(self):
        conn = self.get_connection(self.azure_ml_conn_id)
        if conn.password:
            mask_secret(conn.password)
        return conn

    @cached_property
    def extras(self) -> dict[str, Any]:
        """Connection extras, with the `extra__azure_ml__` prefix of older forms removed."""
        prefix = f"extra__{self.conn_type}__"
        raw = self._connection.extra_dejson or {}
        extras = {key.removeprefix(prefix): value for key, value in raw.items() if value not in ("", None)}
        missing = [name for name in _REQUIRED_EXTRAS if not extras.get(name)]
        if missing:
            raise ValueError(
                f"Airflow connection {self.azure_ml_conn_id!r} lacks extra field(s) {', '.join(missing)}"
            )
        return extras

    def get_credential(self) -> TokenCredential:
        """The credential the connection asks for (see the module docstring for the order)."""
        conn = self._connection
        extras = self.extras
        if extras.get("auth") == "static_token":
            if not is_loopback_http(extras.get("resource_manager_url", "")):
                raise ValueError(
                    f"Airflow connection {self.azure_ml_conn_id!r}: auth 'static_token' is only for the local "
                    "endpoint; resource_manager_url must be http://127.0.0.1:<port>/"
                )
            return StaticTokenCredential(conn.password or "")
        if conn.login and conn.password:
            from azure.identity import ClientSecretCredential

            tenant_id = extras.get("tenant_id")
            if not tenant_id:
                raise ValueError(
                    f"Airflow connection {self.azure_ml_conn_id!r}: a service principal needs extra 'tenant_id'"
                )
            authority = extras.get("authority_host")  # e.g. login.microsoftonline.us for a sovereign cloud
            if authority:
                return ClientSecretCredential(tenant_id, conn.login, conn.password, authority=authority)
            return ClientSecretCredential(tenant_id, conn.login, conn.password)
        if extras.get("managed_identity_client_id"):
            from azure.identity import ManagedIdentityCredential

            return ManagedIdentityCredential(client_id=extras["managed_identity_client_id"])
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    def client_kwargs(self, credential: TokenCredential) -> dict[str, Any]:
        """Cloud settings for MLClient: a built-in cloud, or a custom resource manager URL."""
        extras = self.extras
        url = extras.get("resource_manager_url")
        if not url:
            return {"cloud": extras["cloud"]} if extras.get("cloud") else {}
        # MLClient keeps clouds in a process-wide registry that cannot be overwritten,
        # so the cloud name carries the URL: two endpoints never share one entry.
        kwargs: dict[str, Any] = {
            "cloud": f"{extras.get('cloud', 'Custom')}@{url.rstrip('/')}",
            "cloud_metadata": cloud_metadata_for(url),
            "enable_telemetry": False,
            "show_progress": False,
        }
        if is_loopback_http(url):
            scope = url.rstrip("/") + "/.default"
            kwargs["authentication_policy"] = _LoopbackBearerTokenPolicy(credential, scope)
        return kwargs

    def get_conn(self):
        """A new `azure.ai.ml.MLClient` for the connection's workspace."""
        forget_inherited_custom_cloud()
        from azure.ai.ml import MLClient

        # The SDK logs every HTTP request at INFO; task logs only need our own lines.
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
        extras = self.extras
        credential = self.get_credential()
        return MLClient(
            credential=credential,
            subscription_id=extras["subscription_id"],
            resource_group_name=extras["resource_group"],
            workspace_name=extras["workspace_name"],
            **self.client_kwargs(credential),
        )

    @cached_property
    def client(self):
        """The MLClient, created once per hook."""
        return self.get_conn()

    # --- jobs -----------------------------------------------------------------

    def get_job(self, name: str):
        """The job called name (raises ResourceNotFoundError when there is none)."""
        return self.client.jobs.get(name)

    def get_job_status(self, name: str) -> str:
        """The job's status as the plain string the service uses (e.g. ``Running``)."""
        return job_status(self.get_job(name))

    def find_job(self, name: str):
        """The job called name, or None when the workspace has no such job."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.client.jobs.get(name)
        except ResourceNotFoundError:
            return None

    def submit_job(self, job: Any, experiment_name: str | None = None):
        """Create the job in the workspace and return it as the service sees it."""
        return self.client.jobs.create_or_update(job, experiment_name=experiment_name)

    def get_job_error(self, name: str) -> str:
        """The error a failed job reports: run history's details (what ``jobs.stream`` shows), else "".

        The job resource itself carries no error; a workspace reports it in the run's details
        (``GET {api}/history/v1.0/.../runs/<name>/details`` -> ``error.error.message``). The SDK
        has no public call for it, so this uses the one ``MLClient.jobs.stream`` uses.
        """
        try:
            details = self.client.jobs._runs_operations.get_run_details(name)
        except Exception as err:  # the error is a courtesy: never hide the job's state behind it
            self.log.warning("could not read the run details of Azure ML job %s: %s", name, err)
            return ""
        error = getattr(details, "error", None)
        inner = getattr(error, "error", None)
        message = getattr(inner, "message", None) or ""
        code = getattr(inner, "code", None)
        return f"{code}: {message}" if code and message and not message.startswith(code) else message

    def get_job_times(self, name: str) -> dict[str, str] | None:
        """``{"start_time", "end_time"}`` (ISO 8601) of a job from its run-history record; None while either is unset.

        The jobs API (``MLClient.jobs.get``) carries no run times; Azure ML's run history does
        (``Run.start_time_utc``/``end_time_utc``, azure/ai/ml/_restclient/runhistory/models), and
        the SDK reads it through ``MLClient.jobs._runs_operations.get_run`` (a private attribute).
        Errors propagate (no run history at all: the caller says what it then does without).
        """
        run = self.client.jobs._runs_operations.get_run(name)  # noqa: SLF001 - no public call (see above)
        start, end = getattr(run, "start_time_utc", None), getattr(run, "end_time_utc", None)
        if start and end:
            return {"start_time": start.isoformat(), "end_time": end.isoformat()}
        return None

    def invoke_batch_endpoint(self, **kwargs: Any):
        """Start a batch endpoint job (``MLClient.batch_endpoints.invoke``'s arguments)."""
        return self.client.batch_endpoints.invoke(**kwargs)

    # --- compute and datastores ---------------------------------------------

    def find_compute(self, name: str):
        """The compute target called name, or None when the workspace has none."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.client.compute.get(name)
        except ResourceNotFoundError:
            return None

    def create_or_update_compute(self, compute: Any) -> None:
        """Create or update a compute target and wait until the workspace accepted it."""
        self.client.compute.begin_create_or_update(compute).result()

    def get_datastore(self, name: str, *, include_secrets: bool = False):
        """A datastore: its ``account_name``, ``container_name``, ``endpoint``, ``protocol``
        and, with ``include_secrets``, its ``credentials`` (account key or SAS)."""
        return self.client.datastores.get(name, include_secrets=include_secrets)

    def datastore_location(self, name: str) -> dict[str, str]:
        """The storage behind a datastore: ``account_name``, ``endpoint`` and ``container`` ('' when unset)."""
        store = self.get_datastore(name)
        return {
            "account_name": getattr(store, "account_name", "") or "",
            "endpoint": getattr(store, "endpoint", "") or "",
            "container": getattr(store, "container_name", "") or "",
        }

    def cancel_job(self, name: str) -> None:
        """Ask the service to cancel the job and wait until it accepted."""
        self.client.jobs.begin_cancel(name).result()

    def studio_url(self, job_name: str) -> str:
        """The job's page in Azure ML studio."""
        return studio_job_url(
            job_name, self.extras["subscription_id"], self.extras["resource_group"], self.extras["workspace_name"]
        )

    def test_connection(self) -> tuple[bool, str]:
        """Fetch the workspace: proves the address and the credential."""
        try:
            workspace = self.client.workspaces.get(self.extras["workspace_name"])
        except Exception as err:  # report any failure to the UI, as provider hooks do
            return False, str(err)
        return True, f"workspace {workspace.name} reachable"


def job_status(job: Any) -> str:
    """A job's status as a plain string (the SDK hands out an enum such as JobStatus.RUNNING)."""
    status = getattr(job, "status", None)
    return str(getattr(status, "value", status))


def studio_job_url(job_name: str, subscription_id: str, resource_group: str, workspace_name: str) -> str:
    """The Azure ML studio page of one job."""
    wsid = (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace_name}"
    )
    return f"{STUDIO_URL}/runs/{job_name}?wsid={wsid}"
