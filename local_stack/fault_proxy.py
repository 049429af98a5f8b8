"""A loopback HTTP proxy in front of Azurite that injects Blob faults (503, 500, 429 + Retry-After).

Azurite cannot fail on purpose; the reliability tests need Blob calls that do.
Point a connection string's ``BlobEndpoint`` at the proxy and every request is
forwarded unchanged to Azurite (Shared Key and SAS signatures do not cover the
host, so they stay valid), except those a registered fault answers instead.

Faults use the local Batch service's JSON shape (``kind: http`` only)::

    proxy.add_fault({"kind": "http", "method": "GET", "path": "/images$", "status": 503,
                     "count": 2, "retryAfter": 1})

and the same ``/_emulator/faults`` and ``/_emulator/requests`` routes over HTTP.
Request counts are keyed ``"<METHOD> /<container>"`` (``"GET /"`` for the
account), faulted requests included. Bodies are buffered: this is for tests
with small blobs, not a general proxy.
"""
from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from local_stack.batch_service.errors import BatchServiceError
from local_stack.batch_service.faults import HTTP_FAULT_CODES, Faults

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def _operation(method: str, path: str) -> str:
    """``GET /images`` for any request on the images container (path-style: /account/container/...)."""
    parts = [p for p in path.split("/") if p]
    container = parts[1] if len(parts) > 1 else ""
    return f"{method} /{container}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_ProxyServer"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output quiet
        return

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "content-length" not in {n.lower() for n in headers}:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _emulator(self, path: str, body: bytes) -> None:
        faults = self.server.faults
        try:
            if path == "/_emulator/faults" and self.command == "POST":
                result = faults.add(json.loads(body or b"{}"))
            elif path == "/_emulator/faults" and self.command == "GET":
                result = faults.describe()
            elif path == "/_emulator/faults" and self.command == "DELETE":
                faults.clear()
                result = {}
            elif path == "/_emulator/requests" and self.command == "GET":
                result = faults.request_counts()
            elif path == "/_emulator/requests" and self.command == "DELETE":
                faults.reset_counts()
                result = {}
            else:
                raise BatchServiceError(404, "NotFound", f"no emulator route {self.command} {path}")
        except BatchServiceError as err:
            self._reply(err.status, json.dumps({"code": err.code, "message": err.message}).encode(),
                        {"Content-Type": "application/json"})
            return
        except ValueError as err:
            self._reply(400, json.dumps({"code": "InvalidFault", "message": str(err)}).encode(),
                        {"Content-Type": "application/json"})
            return
        self._reply(200, json.dumps(result).encode(), {"Content-Type": "application/json"})

    def _handle(self) -> None:
        body = self._body()
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/_emulator/"):
            self._emulator(path, body)
            return
        faults = self.server.faults
        faults.count(_operation(self.command, path))
        fault = faults.take_http(self.command, path)
        if fault is not None:
            code = HTTP_FAULT_CODES.get(fault.status, "InjectedFault")
            xml = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                   f"<Message>Injected fault {fault.status}</Message></Error>").encode()
            headers = {"Content-Type": "application/xml", "x-ms-error-code": code}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            self._reply(fault.status, xml, headers)
            return
        upstream = http.client.HTTPConnection(self.server.upstream_host, self.server.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST", "PATCH"):
                headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            out = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
            if self.command != "HEAD":
                out = {k: v for k, v in out.items() if k.lower() != "content-length"}
            self._reply(response.status, data, out)
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, upstream_host: str, upstream_port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.faults = Faults()


class BlobFaultProxy:
    """The proxy, run on a thread of this process: ``start()``, ``url``, ``add_fault()``, ``stop()``."""

    def __init__(self, upstream_url: str, port: int = 0) -> None:
        upstream = urllib.parse.urlsplit(upstream_url)
        if upstream.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"upstream {upstream_url!r} is not a loopback address; this proxy is for local tests")
        self._server = _ProxyServer(port, upstream.hostname, upstream.port or 80)
        self._thread = threading.Thread(target=self._server.serve_forever, name="blob-fault-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def faults(self) -> Faults:
        return self._server.faults

    def start(self) -> "BlobFaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def add_fault(self, spec: dict) -> dict:
        """Register a fault (same JSON as ``POST /_emulator/faults``)."""
        return self.faults.add(spec)

    def connection_string(self, account_name: str, account_key: str) -> str:
        """A Blob connection string whose endpoint is this proxy (path-style, like Azurite)."""
        return (f"DefaultEndpointsProtocol=http;AccountName={account_name};AccountKey={account_key};"
                f"BlobEndpoint=http://127.0.0.1:{self.port}/{account_name};")
