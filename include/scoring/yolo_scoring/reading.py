"""The bytes of an input: a local file, or a blob fetched by a small retrying HTTP client.

Throttling and server errors are retried (``DOWNLOAD_TRIES``, Retry-After
honoured); a missing blob is an ``ImageError`` (an error row); a refused SAS,
a missing container or storage that keeps failing is a ``ScoringError``.
"""
from __future__ import annotations

import email.utils
import http.client
import random
import stat
import time
import urllib.error
import urllib.request
from typing import Any

from .errors import SAS_ENV, ImageError, ScoringError, one_line, sas_query
from .inputs import Item

MAX_FILE_BYTES = 512 * 1024 * 1024
DOWNLOAD_TRIES = 5
DOWNLOAD_TIMEOUT_S = 60.0
MAX_RETRY_WAIT_S = 30.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def _retry_after_seconds(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def _read_limited(stream: Any) -> bytes:
    data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"file larger than {MAX_FILE_BYTES} bytes")
    return data


def fetch_blob(url: str, name: str) -> bytes:
    """GET a blob with bounded retries; 404 is an error row, auth or outage stops the run."""
    sas = sas_query()
    full_url = f"{url}?{sas}" if sas else url
    for attempt in range(1, DOWNLOAD_TRIES + 1):
        wait = min(MAX_RETRY_WAIT_S, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
        try:
            request = urllib.request.Request(full_url, headers={"x-ms-version": "2021-08-06"})
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
                return _read_limited(response)
        except urllib.error.HTTPError as exc:
            code = exc.code
            error_code = exc.headers.get("x-ms-error-code", "") if exc.headers else ""
            if error_code == "ContainerNotFound":
                raise ScoringError(f"container not found reading {name!r}; check --root") from None
            if code == 404:
                raise ImageError("not found") from None
            if code in (401, 403) or error_code == "PublicAccessNotPermitted":
                hint = f"check {SAS_ENV} (wrong, expired or without read permission?)"
                raise ScoringError(
                    f"storage refused access (HTTP {code} {error_code or exc.reason}) reading {name!r}; {hint}"
                ) from None
            if code not in RETRY_STATUSES:
                raise ImageError(f"download failed: HTTP {code} {error_code or exc.reason}") from None
            if attempt == DOWNLOAD_TRIES:
                raise ScoringError(
                    f"storage kept failing (HTTP {code}) reading {name!r} after {DOWNLOAD_TRIES} tries"
                ) from None
            retry_after = _retry_after_seconds(exc.headers)
            if retry_after is not None:
                wait = min(MAX_RETRY_WAIT_S, retry_after)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            if attempt == DOWNLOAD_TRIES:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                raise ScoringError(
                    f"cannot reach storage reading {name!r} after {DOWNLOAD_TRIES} tries: {one_line(reason)}"
                ) from None
        time.sleep(wait)
    raise AssertionError("unreachable")


def read_bytes(item: Item) -> bytes:
    """The raw bytes of an input, from disk or blob storage."""
    if item.url:
        data = fetch_blob(item.url, item.name)
    else:
        assert item.path is not None
        try:
            mode = item.path.stat().st_mode
            if stat.S_ISDIR(mode):
                raise ImageError("is a directory, not an image file")
            if not stat.S_ISREG(mode):  # a FIFO or device would block or never end
                raise ImageError("not a regular file")
            with open(item.path, "rb") as handle:
                data = _read_limited(handle)
        except FileNotFoundError:
            raise ImageError("file not found") from None
        except PermissionError:
            raise ImageError("permission denied") from None
        except OSError as exc:
            raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
    if not data:
        raise ImageError("empty file")
    return data
