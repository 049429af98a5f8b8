"""The ARM-style REST surface of the local Azure ML endpoint (what `azure.ai.ml.MLClient` calls).

One workspace, several resource collections stored as JSON documents, bearer-token
auth checked on every request, and Azure-shaped error bodies
(``{"error": {"code", "message"}}``). Jobs are run by `jobs.JobScheduler`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from local_stack.aml_service.blob import StorageAccount
from local_stack.aml_service.jobs import FORCED_STATES, DatastoreNotFound, JobScheduler
from local_stack.aml_service.resource_store import ResourceStore

log = logging.getLogger(__name__)

PROVIDER = "Microsoft.MachineLearningServices"
#: Container that backs the workspace's default datastore ``workspaceblobstore``.
WORKSPACE_CONTAINER = "azureml-blobstore"
DEFAULT_DATASTORE = "workspaceblobstore"
#: Versioned asset collections: <collection>/<name>/versions/<version>.
VERSIONED = {"codes", "environments", "components", "models", "data"}
#: Plain collections: <collection>/<name>.
PLAIN = {"computes", "datastores", "jobs", "batchEndpoints", "onlineEndpoints"}
#: Studio's rule for datastore names ("lowercase letters, digits, and underscore"; see README).
DATASTORE_NAME = re.compile(r"^[a-z0-9_]+$")
ARM_TYPES = {
    "codes": "codes/versions",
    "environments": "environments/versions",
    "components": "components/versions",
    "models": "models/versions",
    "data": "data/versions",
}


@dataclass
class ServiceConfig:
    """What one local endpoint serves: its workspace, its token and its storage."""

    storage: StorageAccount
    token: str
    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "local-rg"
    workspace: str = "local-ws"
    location: str = "local"
    #: where this endpoint answers (for the workspace's discovery document)
    base_url: str = ""

    @property
    def workspace_path(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/{PROVIDER}/workspaces/{self.workspace}"
        )


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def arm_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class AmlService:
    """Request handlers; everything below ``/subscriptions/.../workspaces/<ws>``."""

    def __init__(self, config: ServiceConfig, store: ResourceStore, scheduler: JobScheduler) -> None:
        self.config = config
        self.store = store
        self.scheduler = scheduler
        self.workspace_id = str(uuid.UUID(hashlib.md5(config.workspace_path.lower().encode()).hexdigest()))

    # --- seeding --------------------------------------------------------------

    def seed(self) -> None:
        """The workspace's default datastore ``workspaceblobstore`` (every workspace has one); no others."""
        self.config.storage.ensure_container(WORKSPACE_CONTAINER)
        body = {
            "properties": {
                "datastoreType": "AzureBlob",
                "accountName": self.config.storage.account_name,
                "containerName": WORKSPACE_CONTAINER,
                "endpoint": "core.windows.net",
                "protocol": "https",
                "isDefault": True,
                "credentials": {"credentialsType": "AccountKey"},
                "description": "the workspace's default datastore",
            }
        }
        self.store.put(f"datastores/{DEFAULT_DATASTORE}", "datastores",
                       self.envelope("datastores", DEFAULT_DATASTORE, body))

    # --- helpers --------------------------------------------------------------

    def arm_id(self, rel: str) -> str:
        return f"{self.config.workspace_path}/{rel.strip('/')}"

    def envelope(self, collection: str, name: str, body: dict[str, Any], rel: str | None = None) -> dict[str, Any]:
        """The ARM document for a resource: id, name, type, properties, systemData."""
        rel = rel or f"{collection}/{name}"
        created = now_iso()
        arm_type = f"{PROVIDER}/workspaces/{ARM_TYPES.get(collection, collection)}"
        doc = {
            "id": self.arm_id(rel),
            "name": name,
            "type": arm_type,
            "properties": dict(body.get("properties") or {}),
            "systemData": {"createdAt": created, "createdBy": "local", "createdByType": "User", "lastModifiedAt": created},
        }
        for key in ("location", "sku", "identity", "tags", "kind"):
            if key in body:
                doc[key] = body[key]
        return doc

    # --- dispatch -------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        if (info["sub"].lower(), info["rg"].lower(), info["ws"].lower()) != (
            self.config.subscription_id.lower(),
            self.config.resource_group.lower(),
            self.config.workspace.lower(),
        ):
            return arm_error(
                404,
                "ResourceNotFound",
                f"Workspace {info['ws']} not found in resource group {info['rg']} of subscription {info['sub']}",
            )
        parts = [p for p in info["rest"].split("/") if p]
        method = request.method
        if not parts:
            return self.workspace_doc() if method == "GET" else arm_error(405, "MethodNotAllowed", method)
        collection = parts[0]
        if collection == "datastores" and len(parts) == 3 and parts[2] == "listSecrets":
            return await self.list_secrets(parts[1])
        if collection == "codes" and len(parts) == 5 and parts[4] == "startPendingUpload":
            return self.start_pending_upload(parts[1], parts[3])
        if collection == "jobs" and len(parts) == 3 and parts[2] == "cancel" and method == "POST":
            return await self.cancel_job(parts[1])
        if collection == "batchEndpoints" and len(parts) == 3 and parts[2] == "invoke" and method == "POST":
            return await self.invoke_endpoint(request, parts[1])  # the endpoint's scoringUri
        if collection in VERSIONED:
            return await self.versioned(request, collection, parts[1:])
        if collection in PLAIN:
            return await self.plain(request, parts)
        return arm_error(404, "NotFound", f"the local Azure ML endpoint has no {collection!r} resources")

    async def run_details(self, name: str) -> web.Response:
        """Run history's details of a job (``GET {api}/history/v1.0/.../runs/<id>/details``), where a
        workspace reports a failed job's ``error`` (what the SDK's ``jobs.stream`` shows)."""
        doc = self.store.get(f"jobs/{name}")
        if doc is None:
            return arm_error(404, "UserError", f"Run {name} was not found")
        details: dict[str, Any] = {"runId": name, "status": doc["properties"].get("status")}
        error = self.scheduler.run_error(name)
        if error and details["status"] == "Failed":
            details["error"] = {"error": {"code": error["code"], "message": error["message"]}}
        return web.json_response(details)

    async def run_record(self, name: str) -> web.Response:
        """Run history's record of a job (``GET {history}/history/v1.0/.../runs/<id>``, the SDK's
        ``RunsOperations.get``): the ``Run`` model's identity, status and times, which give the
        month's Azure ML node time. Fields the product does not read are left out."""
        doc = self.store.get(f"jobs/{name}")
        if doc is None:
            return arm_error(404, "UserError", f"Run {name} was not found")
        props = doc["properties"]
        record: dict[str, Any] = {
            "runId": name, "name": name, "displayName": props.get("displayName") or name,
            "status": props.get("status"), "createdUtc": (doc.get("systemData") or {}).get("createdAt"),
            **self.scheduler.run_times(name),
        }
        return web.json_response({k: v for k, v in record.items() if v is not None})

    def workspace_doc(self) -> web.Response:
        storage_id = (
            f"/subscriptions/{self.config.subscription_id}/resourceGroups/{self.config.resource_group}"
            f"/providers/Microsoft.Storage/storageAccounts/{self.config.storage.account_name}"
        )
        return web.json_response(
            {
                "id": self.config.workspace_path,
                "name": self.config.workspace,
                "type": f"{PROVIDER}/workspaces",
                "location": self.config.location,
                "kind": "Default",
                "sku": {"name": "Basic", "tier": "Basic"},
                "identity": {"type": "SystemAssigned"},
                "properties": {
                    "workspaceId": self.workspace_id,
                    "friendlyName": self.config.workspace,
                    "storageAccount": storage_id,
                    "provisioningState": "Succeeded",
                    "discoveryUrl": f"{self.config.base_url.rstrip('/')}/_local/discovery",
                    "hbiWorkspace": False,
                    "publicNetworkAccess": "Enabled",
                },
            }
        )

    # --- generic collections -------------------------------------------------

    async def plain(self, request: web.Request, parts: list[str]) -> web.Response:
        """Named resources, also nested ones (batchEndpoints/<e>/deployments/<d>)."""
        method = request.method
        if len(parts) % 2 == 1:  # a collection: list it
            if method != "GET":
                return arm_error(405, "MethodNotAllowed", f"{method} on {'/'.join(parts)}")
            docs = self.store.list(parts[-1], "/".join(parts) + "/")
            tag = request.query.get("tag")
            if parts == ["jobs"] and tag:
                docs = [d for d in docs if tag in (d["properties"].get("tags") or {})]
            return web.json_response({"value": docs})
        collection, name = parts[-2], parts[-1]
        path = "/".join(parts)
        if method == "GET":
            doc = self.store.get(path)
            if doc is None:
                return arm_error(
                    404, "ResourceNotFound", f"{path} was not found in workspace {self.config.workspace}"
                )
            return web.json_response(doc)
        if method == "PUT":
            body = await request.json()
            if path == f"jobs/{name}":
                return await self.create_job(name, body)
            if collection == "datastores":
                refused = self.check_datastore(name, body)
                if refused is not None:
                    return refused
            if collection == "deployments" and self.store.get("/".join(parts[:2])) is None:
                return arm_error(404, "ResourceNotFound", f"endpoint {parts[1]!r} does not exist")
            doc = self.envelope(collection, name, body, rel=path)
            if len(parts) > 2:
                doc["type"] = f"{PROVIDER}/workspaces/{parts[0]}/{collection}"
            props = doc["properties"]
            if collection in ("computes", "batchEndpoints", "deployments", "onlineEndpoints"):
                props["provisioningState"] = "Succeeded"
                doc.setdefault("location", self.config.location)
            if collection == "computes":
                props.setdefault("computeLocation", self.config.location)
            if collection.endswith("Endpoints"):
                props["scoringUri"] = str(request.url.with_query(None)) + "/invoke"
            existed = self.store.get(path) is not None
            if collection == "datastores":  # secrets are kept for listSecrets and never returned
                secrets = (props.get("credentials") or {}).pop("secrets", None)
                if secrets:
                    self.store.put(f"datastore-secrets/{name}", "datastore-secrets", secrets)
            self.store.put(path, collection, doc)
            return web.json_response(doc, status=200 if existed else 201)
        if method == "DELETE":
            if path == f"jobs/{name}":
                await self.scheduler.cancel(name)
            found = self.store.delete(path)
            return web.Response(status=200 if found else 204)
        return arm_error(405, "MethodNotAllowed", f"{method} on {path}")

    async def versioned(self, request: web.Request, collection: str, rest: list[str]) -> web.Response:
        method = request.method
        if len(rest) == 1 and method == "GET":  # the container (asset name)
            doc = self.store.get(f"{collection}/{rest[0]}")
            if doc is None:
                return arm_error(404, "ResourceNotFound", f"{collection} {rest[0]!r} not found")
            return web.json_response(doc)
        if len(rest) == 2 and rest[1] == "versions" and method == "GET":
            wanted_hash = request.query.get("hash")
            if wanted_hash:  # code assets are looked up by content hash (any name) before an upload
                versions = [
                    v for v in self.store.list(collection)
                    if (v["properties"].get("properties") or {}).get("hash_sha256") == wanted_hash
                ]
            else:
                versions = self.store.list(collection, f"{collection}/{rest[0]}/versions/")
            return web.json_response({"value": versions})
        if len(rest) != 3 or rest[1] != "versions":
            return arm_error(404, "NotFound", f"unsupported path {collection}/{'/'.join(rest)}")
        name, version = rest[0], rest[2]
        path = f"{collection}/{name}/versions/{version}"
        if method == "GET":
            doc = self.store.get(path)
            if doc is None:
                return arm_error(404, "ResourceNotFound", f"{collection[:-1]} {name}:{version} was not found")
            return web.json_response(doc)
        if method == "PUT":
            body = await request.json()
            existing = self.store.get(path)
            doc = self.envelope(collection, version, body, rel=path)
            doc["properties"]["provisioningState"] = "Succeeded"
            if collection == "models":
                doc["properties"].setdefault("flavors", {})
            self.store.put(path, collection, doc)
            if self.store.get(f"{collection}/{name}") is None:
                container = self.envelope(collection, name, {"properties": {"latestVersion": version}})
                self.store.put(f"{collection}/{name}", f"{collection}-containers", container)
            return web.json_response(doc, status=200 if existing else 201)
        if method == "DELETE":
            return web.Response(status=200 if self.store.delete(path) else 204)
        return arm_error(405, "MethodNotAllowed", f"{method} on {path}")

    # --- special operations --------------------------------------------------

    async def list_secrets(self, name: str) -> web.Response:
        if self.store.get(f"datastores/{name}") is None:
            return arm_error(404, "UserError", f"Could not find datastore: {name}.")
        if name == DEFAULT_DATASTORE:
            return web.json_response({"secretsType": "AccountKey", "key": self.config.storage.account_key})
        secrets = self.store.get(f"datastore-secrets/{name}")
        if not secrets:
            return arm_error(400, "UserError", f"datastore {name!r} has no stored secrets (identity-based access)")
        return web.json_response(secrets)

    def check_datastore(self, name: str, body: dict[str, Any]) -> web.Response | None:
        """Refuse what a workspace refuses, and what this endpoint cannot reach (it has one storage account)."""
        if not DATASTORE_NAME.match(name):
            return arm_error(400, "UserError",
                             f"Datastore name {name!r} should only consist of lowercase letters, digits, and underscore")
        props = body.get("properties") or {}
        if props.get("datastoreType") != "AzureBlob":
            return arm_error(400, "UserError", f"the local endpoint serves AzureBlob datastores, not "
                                               f"{props.get('datastoreType')!r}")
        account = props.get("accountName")
        if account != self.config.storage.account_name:
            return arm_error(400, "UserError", f"storage account {account!r} is not reachable from the local endpoint "
                                               f"(it serves Azurite's {self.config.storage.account_name!r})")
        self.config.storage.ensure_container(props.get("containerName") or "")
        return None

    def start_pending_upload(self, name: str, version: str) -> web.Response:
        """Hand out a fresh container for one code upload and a SAS that can write it (as Azure does)."""
        container = f"code-{uuid.uuid4().hex}"
        self.config.storage.ensure_container(container)
        container_url = f"{self.config.storage.blob_endpoint}/{container}"
        sas = self.config.storage.container_sas(container, write=True)
        return web.json_response(
            {
                "blobReferenceForConsumption": {
                    "blobUri": container_url,
                    "storageAccountArmId": None,
                    "credential": {"credentialType": "SAS", "sasUri": f"{container_url}?{sas}"},
                },
                "pendingUploadId": uuid.uuid4().hex,
                "pendingUploadType": "TemporaryBlobReference",
            }
        )

    async def create_job(self, name: str, body: dict[str, Any]) -> web.Response:
        path = f"jobs/{name}"
        existing = self.store.get(path)
        if existing is not None:
            # Azure ML rejects changing a submitted job; a re-PUT of the same name returns it.
            return web.json_response(existing, status=200)
        doc = self.envelope("jobs", name, body)
        props = doc["properties"]
        props["status"] = "NotStarted"
        props.setdefault("experimentName", "Default")
        props["services"] = {
            "Studio": {
                "jobServiceType": "Studio",
                "endpoint": f"https://ml.azure.com/runs/{name}?wsid={self.config.workspace_path}",
            }
        }
        try:
            self.scheduler.validate(doc)
        except DatastoreNotFound:
            pass  # accepted; the step fails when it is submitted, as on a workspace
        except ValueError as err:
            return arm_error(400, "UserError", str(err))
        self.store.put(path, "jobs", doc)
        await self.scheduler.submit(name)
        return web.json_response(self.store.get(path), status=201)

    async def cancel_job(self, name: str) -> web.Response:
        doc = self.store.get(f"jobs/{name}")
        if doc is None:
            return arm_error(404, "ResourceNotFound", f"job {name!r} was not found")
        await self.scheduler.cancel(name)
        return web.Response(status=200)

    async def invoke_endpoint(self, request: web.Request, endpoint: str) -> web.Response:
        """Batch endpoint invoke: a job running the deployment's scoring script over the input folder."""
        endpoint_doc = self.store.get(f"batchEndpoints/{endpoint}")
        if endpoint_doc is None:
            return arm_error(404, "ResourceNotFound", f"batch endpoint {endpoint!r} was not found")
        deployment = self.scheduler.deployment_for(
            endpoint, endpoint_doc, request.headers.get("azureml-model-deployment")
        )
        if isinstance(deployment, str):
            return arm_error(404, "ResourceNotFound", deployment)
        body = await request.json()
        for output_name, output in ((body.get("properties") or {}).get("outputData") or {}).items():
            kind = str((output or {}).get("jobOutputType") or "")
            if kind.lower().replace("_", "") != "urifile":  # the SDK sends UriFile (the REST enum's spelling)
                return arm_error(400, "UserError", f"Batch endpoint job output {output_name!r} must be of type "
                                                   f"uri_file (the file the rows are appended to), not {kind!r}")
        try:
            job = await self.scheduler.create_endpoint_job(endpoint, deployment, body.get("properties") or {})
        except ValueError as err:
            return arm_error(400, "UserError", str(err))
        return web.json_response(
            {"id": job["id"], "name": job["name"], "type": job["type"],
             "properties": {"status": job["properties"]["status"]}}
        )


def token_is_valid(header: str, secret: str) -> bool:
    """A bearer JWT signed (HS256) with the key derived from the shared secret, not expired."""
    import jwt

    if not header.startswith("Bearer "):
        return False
    key = hashlib.sha256(secret.encode()).digest()
    try:
        jwt.decode(header[7:], key, algorithms=["HS256"], options={"verify_aud": False})
    except jwt.PyJWTError:
        return False
    return True


def auth_middleware(secret: str):
    @web.middleware
    async def check_token(request: web.Request, handler):
        if request.path in ("/_local/health", "/_local/discovery"):  # liveness and service URLs; no secrets
            return await handler(request)
        if not token_is_valid(request.headers.get("Authorization", ""), secret):
            return arm_error(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid, expired or missing (local Azure ML endpoint: "
                "sign in with the endpoint's token).",
            )
        return await handler(request)

    return check_token


def make_app(config: ServiceConfig, store: ResourceStore, scheduler: JobScheduler) -> web.Application:
    service = AmlService(config, store, scheduler)
    service.seed()
    scheduler.attach(service)
    app = web.Application(middlewares=[auth_middleware(config.token)], client_max_size=64 * 1024**2)
    app.router.add_route(
        "*",
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}{rest:.*}",
        service.handle,
    )

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/_local/health", health)

    async def discovery(request: web.Request) -> web.Response:
        """The workspace's discovery document: where its data-plane services (run history) answer."""
        base = config.base_url.rstrip("/")
        return web.json_response({"api": base, "history": base, "experimentation": base})

    app.router.add_get("/_local/discovery", discovery)
    app.router.add_get(
        "/history/v1.0/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices"
        "/workspaces/{ws}/runs/{run}/details",
        lambda request: service.run_details(request.match_info["run"]),
    )
    app.router.add_get(
        "/history/v1.0/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices"
        "/workspaces/{ws}/runs/{run}",
        lambda request: service.run_record(request.match_info["run"]),
    )

    async def faults(request: web.Request) -> web.Response:
        """Test faults for the next job that starts: ``{"rerun_after_append": true}``."""
        body = await request.json()
        unknown = set(body) - {"rerun_after_append"}
        if unknown:
            return arm_error(400, "BadRequest", f"unknown fault(s) {sorted(unknown)}")
        scheduler.next_job_faults.update(body)
        return web.json_response(scheduler.next_job_faults)

    async def force_status(request: web.Request) -> web.Response:
        """Leave a job NotResponding or Paused (``{"status": ...}``), as a workspace can."""
        status = (await request.json()).get("status")
        if status not in FORCED_STATES:
            return arm_error(400, "BadRequest", f"status must be one of {sorted(FORCED_STATES)}")
        await scheduler.force_status(request.match_info["name"], status)
        return web.json_response({"status": status})

    app.router.add_put("/_local/faults", faults)
    app.router.add_post("/_local/jobs/{name}/status", force_status)

    async def on_startup(app: web.Application) -> None:
        await scheduler.resume_unfinished()

    async def on_cleanup(app: web.Application) -> None:
        await scheduler.shutdown()
        store.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app["service"] = service
    return app


__all__ = ["ServiceConfig", "make_app"]
