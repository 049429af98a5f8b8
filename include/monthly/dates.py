"""The day each image of a month belongs to: a date in its path, else its blob's last-modified time.

Cameras and uploaders often put the capture date in the folder or file name
(``202401/cam-1/2024-01-15/x.jpg``, ``20240115_0930.jpg``); that is the day
the image is about. Without one, the day the blob was last written is the
best the storage account knows.
"""
from __future__ import annotations

import csv
import datetime as dt
import re
from collections import Counter
from pathlib import Path
from typing import Any

from azure.storage.blob import ContainerClient

from include.monthly.layout import Month

# YYYY-MM-DD, YYYY_MM_DD or YYYYMMDD, not inside a longer run of digits.
_DATE_RE = re.compile(r"(?<!\d)(\d{4})[-_]?(\d{2})[-_]?(\d{2})(?!\d)")


def date_in_path(name: str, month: Month) -> dt.date | None:
    """The first valid date of ``month`` in the blob name below the month folder, or None."""
    below = name[len(month.prefix):] if name.startswith(month.prefix) else name
    for match in _DATE_RE.finditer(below):
        try:
            day = dt.date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            continue
        if (day.year, day.month) == (month.year, month.month):
            return day
    return None


def image_days(input_container: ContainerClient, month: Month) -> tuple[dict[str, str], str]:
    """Blob name -> ISO day for every blob of the month, and how the days were found."""
    days: dict[str, str] = {}
    from_path = 0
    from include.monthly.staging import skip_reason

    for blob in input_container.list_blobs(name_starts_with=month.prefix):
        if skip_reason(blob.name) is not None:
            continue
        day = date_in_path(blob.name, month)
        if day is not None:
            from_path += 1
        else:
            day = blob.last_modified.date() if blob.last_modified else None
        if day is not None:
            days[blob.name] = day.isoformat()
    if not days:
        return days, "no images"
    if from_path == len(days):
        return days, "date in the path"
    if from_path == 0:
        return days, "blob last-modified time (UTC)"
    return days, f"date in the path ({from_path} images), else blob last-modified time (UTC)"


def per_day(predictions_csv: Path, days: dict[str, str]) -> list[dict[str, Any]]:
    """Images and detections per day, from the merged CSV (an image without a day counts as 'unknown')."""
    images: Counter[str] = Counter()
    detections: Counter[str] = Counter()
    seen: set[str] = set()
    with open(predictions_csv, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            day = days.get(row["image"], "unknown")
            if row["image"] not in seen:
                seen.add(row["image"])
                images[day] += 1
            if row["status"] == "ok":
                detections[day] += 1
    return [{"day": day, "images": images[day], "detections": detections[day]} for day in sorted(images)]
