"""Hostile and odd inputs through the whole monthly DAG: broken files, unusual formats, dangerous
names. Every image gets its rows, bad ones an error row; no name is ever run as a command and
nothing is written outside a task's directory. Bad parameters fail before anything exists in Batch."""
from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from include.monthly.layout import parse_month
from reliability_helpers import (
    assert_each_image_once,
    published_rows,
    run_month,
    upload,
)

pytestmark = pytest.mark.slow
MARKER = f"pwned-{uuid.uuid4().hex[:12]}"


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def odd_month_blobs(assets_dir: Path) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """(name, bytes) blobs of a hostile month folder, and the status each image must get."""
    bus = Image.open(assets_dir / "bus.jpg").convert("RGB")
    bus_jpeg = (assets_dir / "bus.jpg").read_bytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    gray16 = Image.fromarray(np.asarray(bus.convert("L")).astype(np.uint16) * 257)  # mode I;16
    blobs = {
        # dangerous or unusual names, all valid images
        "with space/bus photo.jpg": ("ok", bus_jpeg),
        "quote's \"double\".jpg": ("ok", bus_jpeg),
        "semi;colon&amp|pipe.jpg": ("ok", bus_jpeg),
        f"$(touch {Path('/tmp') / MARKER}).jpg": ("ok", bus_jpeg),
        f"`touch {Path('/tmp') / MARKER}-bt`.jpg": ("ok", bus_jpeg),
        "ünïcødé 日本 😀.jpg": ("ok", bus_jpeg),
        "-rf --output=x.jpg": ("ok", bus_jpeg),
        "nested/deeper/still deeper/bus.JPG": ("ok", bus_jpeg),
        # unusual formats
        "formats/gray-16bit.png": ("scored", _encode(gray16, "PNG")),
        "formats/cmyk.jpg": ("scored", _encode(bus.convert("CMYK"), "JPEG")),
        "formats/bus.webp": ("ok", _encode(bus, "WEBP")),
        "formats/bus.tiff": ("ok", _encode(bus, "TIFF")),
        # stored turned, shown upright: found only if the orientation is applied
        "formats/exif-rotated.jpg": ("ok", _encode(bus.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes())),
        "formats/large-6000x8000.jpg": ("ok", _encode(bus.resize((6000, 8000)), "JPEG", quality=60)),
        "formats/over-limit-12000x9000.jpg": ("error", _encode(Image.new("L", (12000, 9000), 128), "JPEG")),
        # broken files
        "broken/empty.png": ("error", b""),
        "broken/corrupt.jpg": ("error", os.urandom(2048)),
        "broken/truncated.jpg": ("error", bus_jpeg[: len(bus_jpeg) // 3]),
        "broken/text-named-like-an-image.png": ("error", b"this is not a picture\n"),
    }
    names = list(blobs) + ["readme.txt"]
    data = [(name, blobs[name][1]) for name in blobs] + [("readme.txt", b"not an image")]
    assert len(set(names)) == len(names)
    return data, {name: status for name, (status, _) in blobs.items()}


def test_a_hostile_month_folder_gives_one_verdict_per_image_and_runs_no_name(monthly_dag, storage, local_batch, assets_dir, capfd):
    month = parse_month("2025-07")
    blobs, expected = odd_month_blobs(assets_dir)
    upload(storage, month, blobs)
    cwd_before = set(os.listdir(os.getcwd()))

    state, states, log, _ = run_month(monthly_dag, capfd, str(month), shard_size=7)  # 3 shards

    assert state == "success", log[-4000:]
    rows, summary = published_rows(storage, month)
    assert_each_image_once(rows, {month.prefix + name for name in expected})
    status = {row["image"].removeprefix(month.prefix): row["status"] for row in rows}
    for name, want in expected.items():
        if want == "scored":
            assert status[name] in ("ok", "empty"), (name, status[name])
        else:
            assert status[name] == want, (name, status[name], [r["error"] for r in rows if r["image"].endswith(name)])
    errors = {row["image"].removeprefix(month.prefix): row["error"] for row in rows if row["status"] == "error"}
    assert "too large" in errors["formats/over-limit-12000x9000.jpg"]
    assert "truncated" in errors["broken/truncated.jpg"] or "corrupt" in errors["broken/truncated.jpg"]
    rotated = next(r for r in rows if r["image"].endswith("exif-rotated.jpg"))
    assert (rotated["image_width"], rotated["image_height"]) == ("810", "1080")  # bus.jpg, stored as 1080x810
    assert summary["skipped"]["count"] == 1 and summary["images"] == len(expected)

    # No name was run as a command, and no name became a file outside a task's directory.
    assert not list(Path("/tmp").glob(f"{MARKER}*"))
    assert set(os.listdir(os.getcwd())) == cwd_before
    basenames = {Path(name).name for name, _ in blobs}
    for root, _dirs, files in os.walk(local_batch.state_dir):
        stray = basenames.intersection(files)
        assert not stray, (root, stray)


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({"month": "2024-13"}, "month"),
        ({"month": "2025-08", "shard_size": -4}, "shard_size"),
        ({"month": "2025-08", "backend": "quantum"}, "backend"),
    ],
    ids=["month-2024-13", "negative-shard-size", "unknown-backend"],
)
def test_a_bad_parameter_is_refused_naming_it_before_anything_exists_in_batch(monthly_dag, local_batch, capfd, conf, named):
    client = local_batch.client()
    pools, jobs = {p.id for p in client.list_pools()}, {j.id for j in client.list_jobs()}
    local_batch.emulator("DELETE", "requests")

    message = _refusal(monthly_dag, capfd, conf)

    assert named in message, message
    assert {p.id for p in client.list_pools()} == pools and {j.id for j in client.list_jobs()} == jobs
    writes = {op: n for op, n in local_batch.emulator("GET", "requests").items() if op.endswith(("_Add", "_AddCollection"))}
    assert writes == {}


def test_a_missing_connection_fails_validate_naming_it_before_anything_is_created(local_batch, storage, parse_monthly_dag, capfd):
    month = parse_month("2025-08")
    local_batch.emulator("DELETE", "requests")
    work_before = {b.name for b in storage.get_container_client("work").list_blobs()}
    with parse_monthly_dag(MONTHLY_DETECTION_AZURE_BATCH_CONN_ID="batch_conn_nobody_made") as dag:
        state, states, log, _ = run_month(dag, capfd, str(month))
    assert state == "failed"
    assert states["validate"] == "failed" and states["stage"] == "upstream_failed", states
    assert "batch_conn_nobody_made" in log
    assert "up_for_retry" not in log.lower()  # retrying cannot create the connection: failed at once
    assert local_batch.emulator("GET", "requests") == {}  # not one call reached Batch
    assert {b.name for b in storage.get_container_client("work").list_blobs()} == work_before  # nothing staged


def _refusal(dag, capfd, conf: dict) -> str:
    """The error a bad run conf gets: the trigger refuses it, or the validate task fails naming it."""
    try:
        state, states, log, _ = run_month(dag, capfd, **conf)
    except Exception as err:  # noqa: BLE001 - Airflow refuses params before creating the run
        capfd.readouterr()
        return f"{type(err).__name__}: {err}"
    assert state == "failed" and states["validate"] == "failed", states
    return log
