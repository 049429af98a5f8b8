"""The Azurite account behind the local Azure ML endpoint: containers, SAS tokens, folders."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas


@dataclass(frozen=True)
class StorageAccount:
    """A storage account given by its connection string (Azurite's, on this machine)."""

    connection_string: str

    @property
    def _fields(self) -> dict[str, str]:
        pairs = (part.split("=", 1) for part in self.connection_string.split(";") if "=" in part)
        return {key.strip(): value.strip() for key, value in pairs}

    @property
    def account_name(self) -> str:
        return self._fields["AccountName"]

    @property
    def account_key(self) -> str:
        return self._fields["AccountKey"]

    @property
    def blob_endpoint(self) -> str:
        endpoint = self._fields.get("BlobEndpoint")
        if not endpoint:
            raise ValueError("the storage connection string needs a BlobEndpoint (Azurite's URL)")
        return endpoint.rstrip("/")

    def client(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.connection_string)

    def ensure_container(self, name: str) -> None:
        try:
            self.client().create_container(name)
        except ResourceExistsError:
            pass

    def container_sas(self, container: str, *, write: bool = False, hours: int = 8) -> str:
        """A SAS for one container: read+list, plus create+write when asked."""
        permission = ContainerSasPermissions(read=True, list=True, create=write, write=write, add=write)
        return generate_container_sas(
            self.account_name,
            container,
            account_key=self.account_key,
            permission=permission,
            expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours),
        )


def download_prefix(account: StorageAccount, container: str, prefix: str, target: Path) -> list[Path]:
    """Copy every blob under container/prefix into target (keeping sub-folders); returns the files."""
    container_client = account.client().get_container_client(container)
    prefix = prefix.strip("/")
    files: list[Path] = []
    for blob in container_client.list_blobs(name_starts_with=f"{prefix}/" if prefix else None):
        relative = blob.name[len(prefix):].lstrip("/") if prefix else blob.name
        if not relative or blob.name.endswith("/"):
            continue
        destination = (target / safe_relative_path(relative)).resolve()
        if target.resolve() not in destination.parents:  # cannot happen after safe_relative_path; belt and braces
            raise ValueError(f"blob name {blob.name!r} leaves the download folder")
        destination.parent.mkdir(parents=True, exist_ok=True)
        with open(destination, "wb") as handle:
            container_client.download_blob(blob.name).readinto(handle)
        files.append(destination)
    return sorted(files)


def safe_relative_path(name: str) -> str:
    """A blob name as a path that stays inside the download folder ('..' and '.' segments renamed)."""
    parts = [part for part in name.split("/") if part]
    return "/".join("__" if part == ".." else "_" if part == "." else part for part in parts)


def upload_file(account: StorageAccount, container: str, blob_name: str, source: Path) -> None:
    with open(source, "rb") as handle:
        account.client().get_blob_client(container, blob_name).upload_blob(handle, overwrite=True)
