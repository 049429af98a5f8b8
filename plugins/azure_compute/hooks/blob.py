"""Blob Storage helpers on top of the provider's ``wasb`` connection: least-privilege SAS.

Batch tasks reach Blob Storage only through SAS URLs that this hook mints at
the moment tasks are added: read+list on inputs, create+write on outputs, each
expiring with the job's time limit. SAS values are registered with Airflow's
secret masker so they never reach task logs.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

#: What each kind of access may do, and nothing more.
READ_PERMISSIONS = ContainerSasPermissions(read=True, list=True)
WRITE_PERMISSIONS = ContainerSasPermissions(create=True, write=True)


def _mask(secret: str) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - outside an Airflow task
        return
    mask_secret(secret)


class BlobSasHook(WasbHook):
    """Mint container SAS tokens from a ``wasb`` connection (account key or Entra ID)."""

    def container_sas(
        self,
        container: str,
        permission: ContainerSasPermissions,
        expires_in: timedelta,
    ) -> str:
        """A SAS token (without '?') for one container, masked in logs."""
        client: BlobServiceClient = self.get_conn()
        start = datetime.now(timezone.utc) - timedelta(minutes=5)  # tolerate clock skew
        expiry = datetime.now(timezone.utc) + expires_in
        account_key = getattr(client.credential, "account_key", None)
        if account_key:
            token = generate_container_sas(
                client.account_name, container, account_key=account_key,
                permission=permission, start=start, expiry=expiry,
            )
        else:
            delegation_key = client.get_user_delegation_key(start, expiry)
            token = generate_container_sas(
                client.account_name, container, user_delegation_key=delegation_key,
                permission=permission, start=start, expiry=expiry,
            )
        _mask(token)
        return token

    def read_text(self, container: str, blob: str) -> str:
        """A blob's content as UTF-8 text (raises ResourceNotFoundError when it is missing)."""
        return self.get_conn().get_blob_client(container, blob).download_blob().readall().decode("utf-8")

    def container_url(self, container: str) -> str:
        """The container's URL without any credential."""
        return self.get_conn().get_container_client(container).url

    def container_sas_url(self, container: str, permission: ContainerSasPermissions, expires_in: timedelta) -> str:
        """Container URL plus SAS, as Batch's ``containerUrl``/``storageContainerUrl`` expects."""
        url = f"{self.container_url(container)}?{self.container_sas(container, permission, expires_in)}"
        _mask(url)
        return url

    def blob_sas_url(self, container: str, blob: str, container_sas: str) -> str:
        """A blob's URL carrying an existing container SAS (for ``httpUrl`` resource files)."""
        url = f"{self.container_url(container)}/{quote(blob)}?{container_sas}"
        _mask(url)
        return url
