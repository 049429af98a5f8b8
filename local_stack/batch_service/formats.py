"""Wire formats: ISO 8601 times and durations, ETags, RFC 1123 dates."""
from __future__ import annotations

import itertools
import re
import time
from datetime import datetime, timezone
from email.utils import format_datetime

_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
_etag_counter = itertools.count()


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rfc1123(iso: str) -> str:
    return format_datetime(parse_iso(iso), usegmt=True)


def new_etag() -> str:
    """An opaque, always-changing ETag in Azure's 0x8D... style."""
    return "0x8D" + format(time.time_ns() // 100 + next(_etag_counter), "X")[-13:]


def parse_duration(text: str | None) -> float | None:
    """Seconds in an ISO 8601 duration such as PT10S or P1DT2H; None when absent."""
    if not text:
        return None
    match = _DURATION.match(text)
    if not match or text in ("P", "PT"):
        raise ValueError(f"'{text}' is not an ISO 8601 duration")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return parts.get("days", 0) * 86400 + parts.get("hours", 0) * 3600 + parts.get("minutes", 0) * 60 + parts.get("seconds", 0)


def elapsed_since(iso: str) -> float:
    return (datetime.now(timezone.utc) - parse_iso(iso)).total_seconds()
