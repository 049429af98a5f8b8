"""The test-proxy hooks, as pass-throughs: every request goes to the current local Batch service.

The suite's decorator calls transform_request(request, recording_id) before each send and then
reads the `x-recording-upstream-base-uri` header to restore the request's original URL, as it
does with the real proxy. We send to the local service instead of the proxy and record nothing.
"""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from devtools_testutils import service


def get_test_id() -> str:
    return "local-batch-conformance"


def start_record_or_playback(test_id: str) -> tuple[str, dict]:
    return "no-recording", {}


def stop_record_or_playback(test_id: str, recording_id: str, test_variables) -> None:
    return None


def transform_request(request, recording_id: str) -> None:
    """Point the request at the local service; remember where it was headed."""
    original = urlsplit(request.url)
    local = urlsplit(service.url())
    request.headers["x-recording-upstream-base-uri"] = f"{original.scheme}://{original.netloc}"
    request.url = urlunsplit((local.scheme, local.netloc, original.path, original.query, original.fragment))
