"""The HTTP face of the local Batch service: Azure Batch REST (api-version 2025-06-01) on aiohttp.

Every Azure route is authenticated with Shared Key, counted under the REST
spec's operation name (Pool_Add, Task_AddCollection, ...), and may be answered
by an injected fault first. `/_emulator/*` routes need no auth (loopback only).
"""
from __future__ import annotations

import json
import re
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlencode

from aiohttp import web

from local_stack.batch_service import auth, files, job_ops, node_ops, odata
from local_stack.batch_service.account_state import public
from local_stack.batch_service.engine import Engine
from local_stack.batch_service.errors import BatchServiceError, error_body, invalid_property, invalid_query
from local_stack.batch_service.faults import HTTP_FAULT_CODES, Faults
from local_stack.batch_service.formats import now_iso, rfc1123

MAX_BODY_BYTES = 1024 * 1024
MAX_TASKS_PER_COLLECTION = 100
MAX_RESULTS = 1000
JSON_TYPE = "application/json;odata=minimalmetadata"

Handler = Callable[["Call"], Awaitable[web.StreamResponse]]


@dataclass
class Call:
    """One authenticated request, with its path parameters and query."""

    request: web.Request
    params: dict[str, str]
    query: dict[str, str]
    request_id: str

    async def body(self) -> dict:
        raw = await self.request.read()
        if len(raw) > MAX_BODY_BYTES:
            raise BatchServiceError(413, "RequestBodyTooLarge", "The request body is too large and exceeds the maximum permissible limit.",
                                    {"MaxLimit": str(MAX_BODY_BYTES)})
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise BatchServiceError(400, "InvalidRequestBody", "The specified request body is not syntactically valid.") from None
        if not isinstance(data, dict):
            raise BatchServiceError(400, "InvalidRequestBody", "The request body must be a JSON object.")
        return data


class BatchApp:
    """Routes, auth, faults and the handlers that call the engine."""

    def __init__(self, engine: Engine, faults: Faults, account: str, key: str) -> None:
        self.engine = engine
        self.faults = faults
        self.account = account
        self.key = key
        self.routes: list[tuple[str, re.Pattern, str, Handler]] = []
        r = self._route
        r("POST", "/pools", "Pool_Add", self.pool_add)
        r("GET", "/pools", "Pool_List", self.pool_list)
        r("GET", "/pools/{pool}", "Pool_Get", self.pool_get)
        r("HEAD", "/pools/{pool}", "Pool_Exists", self.pool_exists)
        r("PATCH", "/pools/{pool}", "Pool_Patch", self.pool_patch)
        r("DELETE", "/pools/{pool}", "Pool_Delete", self.pool_delete)
        r("POST", "/pools/{pool}/resize", "Pool_Resize", self.pool_resize)
        r("POST", "/pools/{pool}/stopresize", "Pool_StopResize", self.pool_stop_resize)
        r("POST", "/pools/{pool}/enableautoscale", "Pool_EnableAutoScale", self.pool_enable_autoscale)
        r("POST", "/pools/{pool}/disableautoscale", "Pool_DisableAutoScale", self.pool_disable_autoscale)
        r("POST", "/pools/{pool}/evaluateautoscale", "Pool_EvaluateAutoScale", self.pool_evaluate_autoscale)
        r("POST", "/pools/{pool}/updateproperties", "Pool_UpdateProperties", self.pool_update_properties)
        r("POST", "/pools/{pool}/removenodes", "Pool_RemoveNodes", self.pool_remove_nodes)
        r("GET", "/pools/{pool}/nodes", "ComputeNode_List", self.node_list)
        r("GET", "/pools/{pool}/nodes/{node}", "ComputeNode_Get", self.node_get)
        r("POST", "/jobs", "Job_Add", self.job_add)
        r("GET", "/jobs", "Job_List", self.job_list)
        r("GET", "/jobs/{job}", "Job_Get", self.job_get)
        r("PATCH", "/jobs/{job}", "Job_Patch", self.job_patch)
        r("PUT", "/jobs/{job}", "Job_Update", self.job_update)
        r("DELETE", "/jobs/{job}", "Job_Delete", self.job_delete)
        r("POST", "/jobs/{job}/terminate", "Job_Terminate", self.job_terminate)
        r("GET", "/jobs/{job}/taskcounts", "Job_GetTaskCounts", self.job_task_counts)
        r("POST", "/jobs/{job}/tasks", "Task_Add", self.task_add)
        r("GET", "/jobs/{job}/tasks", "Task_List", self.task_list)
        r("POST", "/jobs/{job}/addtaskcollection", "Task_AddCollection", self.task_add_collection)
        r("GET", "/jobs/{job}/tasks/{task}", "Task_Get", self.task_get)
        r("PUT", "/jobs/{job}/tasks/{task}", "Task_Update", self.task_update)
        r("DELETE", "/jobs/{job}/tasks/{task}", "Task_Delete", self.task_delete)
        r("POST", "/jobs/{job}/tasks/{task}/terminate", "Task_Terminate", self.task_terminate)
        r("POST", "/jobs/{job}/tasks/{task}/reactivate", "Task_Reactivate", self.task_reactivate)
        r("GET", "/jobs/{job}/tasks/{task}/files", "File_ListFromTask", self.file_list)
        r("GET", "/jobs/{job}/tasks/{task}/files/{path+}", "File_GetFromTask", self.file_get)
        r("HEAD", "/jobs/{job}/tasks/{task}/files/{path+}", "File_GetPropertiesFromTask", self.file_get)
        node_ops.register(self)
        job_ops.register(self)

    def _route(self, method: str, template: str, operation: str, handler: Handler) -> None:
        pattern = re.sub(r"\{(\w+)\+\}", r"(?P<\1>.+)", template)
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self.routes.append((method, re.compile(f"^{pattern}/?$"), operation, handler))

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * MAX_BODY_BYTES)
        app.router.add_route("GET", "/_emulator/requests", self.emulator_requests)
        app.router.add_route("DELETE", "/_emulator/requests", self.emulator_reset_requests)
        app.router.add_route("POST", "/_emulator/faults", self.emulator_add_fault)
        app.router.add_route("GET", "/_emulator/faults", self.emulator_list_faults)
        app.router.add_route("DELETE", "/_emulator/faults", self.emulator_clear_faults)
        app.router.add_route("GET", "/_emulator/health", self.emulator_health)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    # ------------------------------------------------------------------ plumbing
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        raw_path, _, raw_query = request.raw_path.partition("?")
        path = raw_path
        try:
            match = self._match(request.method, path)
            if match is None:
                self.faults.count("Unknown")
                raise BatchServiceError(404, "InvalidUri", f"The requested URI does not represent any resource on the server: {request.method} {path}")
            operation, handler, params = match
            self.faults.count(operation)
            fault = self.faults.take_http(request.method, path)
            if fault is not None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                code = HTTP_FAULT_CODES.get(fault.status, "InjectedFault")
                raise _FaultResponse(fault.status, code, headers)
            auth.verify(request.method, raw_path, raw_query, request.headers, self.account, self.key)
            if request.content_length and request.content_length > MAX_BODY_BYTES:
                raise BatchServiceError(413, "RequestBodyTooLarge", "The request body is too large and exceeds the maximum permissible limit.",
                                        {"MaxLimit": str(MAX_BODY_BYTES)})
            query = {k: v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
            params = self.engine.canonical_ids(params)  # ids are case-insensitive on Azure
            response = await handler(Call(request, params, query, request_id))
        except _FaultResponse as fault:
            response = self._error(request, fault.status, fault.code, "Injected by /_emulator/faults.", None, request_id, fault.headers)
        except BatchServiceError as err:
            response = self._error(request, err.status, err.code, err.message, err.values, request_id)
        except Exception:  # a bug here must still look like Azure to the client, and be visible in the log
            traceback.print_exc()
            response = self._error(request, 500, "InternalError", "The server encountered an internal error.", None, request_id)
        response.headers["request-id"] = request_id
        client_request_id = request.headers.get("client-request-id")
        if client_request_id:
            response.headers["client-request-id"] = client_request_id
        return response

    def _match(self, method: str, path: str) -> tuple[str, Handler, dict[str, str]] | None:
        for route_method, pattern, operation, handler in self.routes:
            if route_method != method:
                continue
            found = pattern.match(path)
            if found:
                return operation, handler, {k: unquote(v) for k, v in found.groupdict().items()}
        return None

    def _error(self, request: web.Request, status: int, code: str, message: str, values, request_id: str,
               headers: dict[str, str] | None = None) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        body = error_body(code, message, values, request_id)
        return web.Response(status=status, text=json.dumps(body), content_type="application/json", charset="utf-8", headers=headers)

    def _json(self, doc: dict, status: int = 200, resource: dict | None = None) -> web.Response:
        """Serialize under the engine lock: task workers update documents in place."""
        with self.engine.lock:
            text = json.dumps(doc)
            response = web.Response(status=status, text=text, content_type="application/json", charset="utf-8")
            response.headers["Content-Type"] = JSON_TYPE
            if resource is not None:
                _resource_headers(response, resource)
        return response

    def _empty(self, status: int, resource: dict | None = None) -> web.Response:
        response = web.Response(status=status)
        if resource is not None:
            with self.engine.lock:
                _resource_headers(response, resource)
                response.headers["Location"] = resource["url"]
        return response

    def _page(self, call: Call, docs: list[dict]) -> web.Response:
        """An OData page: filtered, projected, at most maxresults long, with an absolute nextLink."""
        predicate = odata.parse_filter(call.query.get("$filter"))
        try:
            limit = int(call.query.get("maxresults") or MAX_RESULTS)
            skip = int(call.query.get("$skiptoken") or 0)
        except ValueError:
            raise invalid_query("maxresults", call.query.get("maxresults", ""), "The value must be an integer.") from None
        if not 1 <= limit <= MAX_RESULTS:
            raise invalid_query("maxresults", str(limit), f"The value must be between 1 and {MAX_RESULTS}.")
        with self.engine.lock:
            matching = [d for d in docs if predicate(d)]
            page = matching[skip : skip + limit]
            body: dict = {
                "odata.metadata": f"{self.engine.config.base_url}/$metadata",
                "value": [odata.select(public(d), call.query.get("$select")) for d in page],
            }
        if skip + limit < len(matching):
            query = {k: v for k, v in call.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = str(skip + limit)
            path = call.request.raw_path.partition("?")[0]
            body["odata.nextLink"] = f"{self.engine.config.base_url}{path}?{urlencode(query)}"
        return self._json(body)

    # ------------------------------------------------------------------ pools
    async def pool_add(self, call: Call) -> web.Response:
        pool = self.engine.create_pool(await call.body())
        return self._empty(201, pool)

    async def pool_list(self, call: Call) -> web.Response:
        return self._page(call, self.engine.list_pools())

    async def pool_get(self, call: Call) -> web.Response:
        pool = self.engine.get_pool(call.params["pool"])
        with self.engine.lock:
            return self._json(odata.select(public(pool), call.query.get("$select")), resource=pool)

    async def pool_exists(self, call: Call) -> web.Response:
        pool = self.engine.get_pool(call.params["pool"])
        return self._empty(200, pool)

    async def pool_patch(self, call: Call) -> web.Response:
        return self._empty(200, self.engine.update_pool(call.params["pool"], await call.body()))

    async def pool_update_properties(self, call: Call) -> web.Response:
        return self._empty(204, self.engine.update_pool(call.params["pool"], await call.body(), replace=True))

    async def pool_delete(self, call: Call) -> web.Response:
        self.engine.delete_pool(call.params["pool"])
        return self._empty(202)

    async def pool_resize(self, call: Call) -> web.Response:
        self.engine.resize_pool(call.params["pool"], await call.body())
        return self._empty(202, self.engine.get_pool(call.params["pool"]))

    async def pool_stop_resize(self, call: Call) -> web.Response:
        self.engine.stop_resize(call.params["pool"])
        return self._empty(202, self.engine.get_pool(call.params["pool"]))

    async def pool_enable_autoscale(self, call: Call) -> web.Response:
        return self._empty(200, self.engine.enable_autoscale(call.params["pool"], await call.body()))

    async def pool_disable_autoscale(self, call: Call) -> web.Response:
        return self._empty(200, self.engine.disable_autoscale(call.params["pool"]))

    async def pool_evaluate_autoscale(self, call: Call) -> web.Response:
        return self._json(self.engine.evaluate_autoscale(call.params["pool"], await call.body()))

    async def pool_remove_nodes(self, call: Call) -> web.Response:
        self.engine.remove_nodes(call.params["pool"], await call.body())
        return self._empty(202, self.engine.get_pool(call.params["pool"]))

    async def node_list(self, call: Call) -> web.Response:
        return self._page(call, self.engine.list_nodes(call.params["pool"]))

    async def node_get(self, call: Call) -> web.Response:
        node = self.engine.get_node(call.params["pool"], call.params["node"])
        with self.engine.lock:
            return self._json(odata.select(public(node), call.query.get("$select")))

    # ------------------------------------------------------------------ jobs
    async def job_add(self, call: Call) -> web.Response:
        return self._empty(201, self.engine.create_job(await call.body()))

    async def job_list(self, call: Call) -> web.Response:
        return self._page(call, self.engine.list_jobs())

    async def job_get(self, call: Call) -> web.Response:
        job = self.engine.get_job(call.params["job"])
        with self.engine.lock:
            return self._json(odata.select(public(job), call.query.get("$select")), resource=job)

    async def job_patch(self, call: Call) -> web.Response:
        return self._empty(200, self.engine.update_job(call.params["job"], await call.body()))

    async def job_update(self, call: Call) -> web.Response:
        return self._empty(200, self.engine.update_job(call.params["job"], await call.body(), replace=True))

    async def job_delete(self, call: Call) -> web.Response:
        self.engine.delete_job(call.params["job"])
        return self._empty(202)

    async def job_terminate(self, call: Call) -> web.Response:
        body = await call.body()
        self.engine.terminate_job(call.params["job"], body.get("terminateReason"))
        return self._empty(202, self.engine.get_job(call.params["job"]))

    async def job_task_counts(self, call: Call) -> web.Response:
        return self._json(self.engine.task_counts(call.params["job"]))

    # ------------------------------------------------------------------ tasks
    async def task_add(self, call: Call) -> web.Response:
        return self._empty(201, self.engine.add_task(call.params["job"], await call.body()))

    async def task_add_collection(self, call: Call) -> web.Response:
        body = await call.body()
        values = body.get("value")
        if not isinstance(values, list):
            raise BatchServiceError(400, "MissingRequiredProperty", "A required property was not specified in the request body.", {"PropertyName": "value"})
        if len(values) > MAX_TASKS_PER_COLLECTION:
            raise invalid_property("value", len(values), f"The maximum number of tasks in a collection is {MAX_TASKS_PER_COLLECTION}.")
        results = self.engine.add_task_collection(call.params["job"], values)
        return self._json({"value": results})

    async def task_list(self, call: Call) -> web.Response:
        return self._page(call, self.engine.list_tasks(call.params["job"]))

    async def task_get(self, call: Call) -> web.Response:
        task = self.engine.get_task(call.params["job"], call.params["task"])
        with self.engine.lock:
            return self._json(odata.select(public(task), call.query.get("$select")), resource=task)

    async def task_update(self, call: Call) -> web.Response:
        return self._empty(200, self.engine.update_task(call.params["job"], call.params["task"], await call.body()))

    async def task_delete(self, call: Call) -> web.Response:
        self.engine.delete_task(call.params["job"], call.params["task"])
        return self._empty(200)

    async def task_terminate(self, call: Call) -> web.Response:
        self.engine.terminate_task(call.params["job"], call.params["task"])
        return self._empty(204, self.engine.get_task(call.params["job"], call.params["task"]))

    async def task_reactivate(self, call: Call) -> web.Response:
        self.engine.reactivate_task(call.params["job"], call.params["task"])
        return self._empty(204, self.engine.get_task(call.params["job"], call.params["task"]))

    # ------------------------------------------------------------------ task files
    async def file_list(self, call: Call) -> web.Response:
        job, task = call.params["job"], call.params["task"]
        with self.engine.lock:
            root = self.engine._task_dir(self.engine._task(job, task))
        base = f"{self.engine.config.base_url}/jobs/{job}/tasks/{task}/files"
        recursive = call.query.get("recursive", "false").lower() == "true"
        return self._page(call, files.list_docs(root, base, recursive) if root else [])

    async def file_get(self, call: Call) -> web.StreamResponse:
        job, task, name = call.params["job"], call.params["task"], call.params["path"]
        path = self.engine.task_file(job, task, name)
        url = f"{self.engine.config.base_url}/jobs/{job}/tasks/{task}/files/{name}"
        return files.answer(call.request.method, call.request.headers, path, url)

    # ------------------------------------------------------------------ emulator
    async def emulator_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.request_counts())

    async def emulator_reset_requests(self, request: web.Request) -> web.Response:
        self.faults.reset_counts()
        return web.json_response({})

    async def emulator_list_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.describe())

    async def emulator_clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.json_response([])

    async def emulator_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "account": self.account, "time": now_iso()})

    async def emulator_add_fault(self, request: web.Request) -> web.Response:
        try:
            spec = await request.json()
            if not isinstance(spec, dict):
                raise ValueError
        except ValueError:
            return web.json_response(error_body("InvalidFault", "The fault must be a JSON object."), status=400)
        try:
            if spec.get("kind") == "preempt":
                if not spec.get("poolId"):
                    raise BatchServiceError(400, "InvalidFault", "A preempt fault needs poolId.")
                result = self.engine.preempt(spec["poolId"], spec.get("nodeId"))
                return web.json_response({"kind": "preempt", **result}, status=201)
            return web.json_response(self.faults.add(spec), status=201)
        except BatchServiceError as err:
            return web.json_response(err.body(), status=err.status)


class _FaultResponse(Exception):
    def __init__(self, status: int, code: str, headers: dict[str, str]) -> None:
        self.status, self.code, self.headers = status, code, headers


def _resource_headers(response: web.StreamResponse, resource: dict) -> None:
    response.headers["ETag"] = resource["eTag"]
    response.headers["Last-Modified"] = rfc1123(resource["lastModified"])
    response.headers["DataServiceId"] = resource["url"]
