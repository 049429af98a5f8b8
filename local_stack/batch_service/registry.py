"""The local container registry: where a local node "pulls" the images a pool or task names.

There is no container engine here, so an image is what a task run in it can
see: its environment (``ENV``, with a ``PATH`` leading to its runtime) and its
``WORKDIR``. ``make runtime`` builds the scoring image (a venv made from
``include/scoring/requirements.txt`` by the same recipe a start task runs) and
records it in ``<registry>/registry.json``::

    {"servers": {"localregistry.local": {"users": {"scoring": {"sha256": "..."}}}},
     "images": {"localregistry.local/yolo-scoring:1": {"env": {"PATH": "..."}, "workdir": "..."}}}

A pull follows Docker's rules for names (a first component with ``.`` or ``:``
or ``localhost`` is the registry server, else ``docker.io``; no tag means
``:latest``) and Batch's for credentials (the task's ``registry``, else the
pool's ``containerRegistries`` entry for that server: username/password, or
an ``identityReference`` to a user-assigned identity *of the pool*; a pool made
through the data plane has none, since ``Pool_Add`` has no ``identity``
property). An unknown image or wrong credentials fail
the way a pull fails on a node: the task gets ``ContainerInvalidImage`` or
``ContainerInvalidRegistry`` (``TaskFailureInformationCodes``), a prefetch
makes the node ``unusable``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "registry.json"
DEFAULT_SERVER = "docker.io"


@dataclass(frozen=True)
class Image:
    """What a container of this image gives the command it runs."""

    name: str
    env: dict[str, str]
    workdir: str | None


class PullError(Exception):
    """A pull that failed; ``code`` is the Batch failure code it becomes."""

    def __init__(self, code: str, message: str, details: dict[str, str]) -> None:
        super().__init__(message)
        self.code = code
        self.details = details

    def failure_info(self) -> dict:
        return {"category": "usererror", "code": self.code, "message": str(self),
                "details": [{"name": k, "value": v} for k, v in self.details.items()]}


def normalise(image: str) -> tuple[str, str]:
    """(registry server, full reference with tag) of an image name as ``docker pull`` reads it."""
    name = image.strip()
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        server = first.lower()
    else:
        server = DEFAULT_SERVER
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        name += ":latest"
    return server, name


def _server_of(reference: dict) -> str:
    server = (reference.get("registryServer") or DEFAULT_SERVER).strip().lower()
    for scheme in ("https://", "http://"):
        server = server.removeprefix(scheme)
    return server.rstrip("/")


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


class Registry:
    """Read-only view of a registry directory (``registry.json``); reread on every pull."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def _manifest(self) -> dict:
        if self.root is None or not (self.root / MANIFEST).is_file():
            return {"servers": {}, "images": {}}
        return json.loads((self.root / MANIFEST).read_text())

    def pull(self, image: str, registries: list[dict] | None, task_registry: dict | None = None,
             pool_identities: list[str] | None = None) -> Image:
        """The image, or PullError as a node's pull would fail."""
        server, reference = normalise(image)
        manifest = self._manifest()
        known = manifest.get("servers", {}).get(server)
        details = {"ContainerImage": reference}
        candidates = [task_registry] if task_registry else [r for r in registries or [] if _server_of(r) == server]
        login = next((r for r in candidates if _server_of(r) == server), None)
        if known is None:
            # Not a registry this machine serves: as a pull from an unreachable or unknown registry.
            raise PullError("ContainerInvalidImage", "One or more container images specified are invalid",
                            {**details, "Message": f"no such image: {reference} (the local registry serves "
                             f"{', '.join(sorted(manifest.get('servers', {}))) or 'no server'}; run `make runtime`)"})
        if login is not None:
            if login.get("identityReference"):
                resource_id = (login["identityReference"] or {}).get("resourceId") or ""
                if resource_id.lower() not in {i.lower() for i in pool_identities or []}:
                    raise PullError("ContainerInvalidRegistry", "The specified container registry was invalid",
                                    {**details, "Message": f"the pool has no user-assigned identity {resource_id!r} "
                                     "(only the Batch management API assigns identities to a pool)"})
                if resource_id.lower() not in {i.lower() for i in known.get("identities", [])}:
                    raise PullError("ContainerInvalidRegistry", "The specified container registry was invalid",
                                    {**details, "Message": f"identity {resource_id!r} may not pull from {server}"})
            else:
                user = (known.get("users") or {}).get(login.get("username") or "")
                if user is None or user.get("sha256") != password_hash(login.get("password") or ""):
                    raise PullError("ContainerInvalidRegistry", "The specified container registry was invalid",
                                    {**details, "Message": f"login to {server} failed: unauthorized: "
                                     "incorrect username or password"})
        elif not known.get("anonymousPull", False):
            raise PullError("ContainerInvalidImage", "One or more container images specified are invalid",
                            {**details, "Message": f"pull access denied for {reference}: unauthorized: "
                             "authentication required (no containerRegistries entry for this server)"})
        entry = manifest.get("images", {}).get(reference)
        if entry is None:
            raise PullError("ContainerInvalidImage", "One or more container images specified are invalid",
                            {**details, "Message": f"manifest for {reference} not found: manifest unknown"})
        return Image(reference, dict(entry.get("env") or {}), entry.get("workdir"))


def default_root() -> Path | None:
    """``LOCAL_BATCH_REGISTRY_DIR`` if set (``make`` sets it to ``.local/registry``)."""
    value = os.environ.get("LOCAL_BATCH_REGISTRY_DIR")
    return Path(value) if value else None
