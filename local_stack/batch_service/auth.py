"""Shared Key authentication, verified exactly as azure-batch's BatchSharedKeyAuthPolicy signs.

String to sign: VERB, then the values of eleven standard headers, then every
`ocp-*` header as `name:value` sorted, then `/account/path`, then each query
parameter as `\nname:value` (sorted, first value, parse_qs-decoded).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qs

from local_stack.batch_service.errors import BatchServiceError

SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)


def string_to_sign(method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], account: str) -> str:
    lowered = {k.lower(): v for k, v in headers.items() if v}
    if method not in ("GET", "HEAD") and "content-length" not in lowered:
        lowered["content-length"] = "0"
    parts = method + "\n" + "\n".join(str(lowered.get(h, "")) for h in SIGNED_HEADERS) + "\n"
    ocp = sorted((k, v) for k, v in lowered.items() if "ocp-" in k)
    parts += "".join(f"{k}:{v}\n" for k, v in ocp)
    parts += f"/{account}{raw_path}"
    query = parse_qs(raw_query)
    for name in sorted(query):
        value = query[name][0]
        if value:
            parts += f"\n{name}:{value}"
    return parts


def sign(key: str, text: str) -> str:
    digest = hmac.new(base64.b64decode(key), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def authentication_failed(detail: str) -> BatchServiceError:
    return BatchServiceError(
        403,
        "AuthenticationFailed",
        "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
        {"AuthenticationErrorDetail": detail},
    )


def verify(method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], account: str, key: str) -> None:
    """Raise 403 AuthenticationFailed unless the Authorization header carries the right signature."""
    header = headers.get("Authorization") or headers.get("authorization")
    if not header:
        raise authentication_failed("The request does not carry an Authorization header.")
    scheme, _, credential = header.partition(" ")
    name, _, signature = credential.partition(":")
    if scheme != "SharedKey" or not signature:
        raise authentication_failed("The Authorization header is not of the form 'SharedKey account:signature'.")
    if name != account:
        raise authentication_failed(f"The account '{name}' in the Authorization header is not this account.")
    if not (headers.get("ocp-date") or headers.get("date") or headers.get("Date")):
        raise authentication_failed("The request carries neither an ocp-date nor a Date header.")
    expected = sign(key, string_to_sign(method, raw_path, raw_query, headers, account))
    if not hmac.compare_digest(expected, signature):
        raise authentication_failed("The MAC signature found in the HTTP request is not the same as any computed signature.")
