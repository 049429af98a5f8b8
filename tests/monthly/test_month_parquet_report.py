"""predictions.parquet holds the CSV's rows with typed columns; report.html is self-contained and complete."""
from __future__ import annotations

import csv
import io
import re

import pyarrow as pa
import pyarrow.parquet as pq

from include.monthly.layout import parse_month
from include.monthly.parquet import csv_to_parquet
from include.monthly.publish import load_published, publish
from include.monthly.report import render_report
from include.monthly.schema import PREDICTION_COLUMNS

JANUARY = parse_month("2024-01")
ROWS = [
    ["202401/cam/2024-01-03/a.jpg", "ok", "0", "person", "0.91", "1.5", "2", "30.25", "40", "640", "480", ""],
    ["202401/cam/2024-01-03/a.jpg", "ok", "5", "bus", "0.42", "0", "0", "10", "10", "640", "480", ""],
    ["202401/cam/b, \"quoted\".png", "empty", "", "", "", "", "", "", "", "320", "200", ""],
    ["202401/cam/bad.jpg", "error", "", "", "", "", "", "", "", "", "", "cannot identify image file"],
]


def write_csv(path):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(PREDICTION_COLUMNS)
        writer.writerows(ROWS)
    return path


def test_the_parquet_file_has_the_csvs_rows_with_typed_columns(tmp_path) -> None:
    source = write_csv(tmp_path / "p.csv")
    assert csv_to_parquet(source, tmp_path / "p.parquet") == len(ROWS)
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.schema.field("class_id").type == pa.int32()
    assert table.schema.field("confidence").type == pa.float64()
    assert table.schema.field("image_height").type == pa.int32()
    back = table.to_pylist()
    assert [r["image"] for r in back] == [r[0] for r in ROWS]
    assert back[0]["confidence"] == 0.91 and back[0]["x2"] == 30.25 and back[0]["class_id"] == 0
    assert back[2]["class_id"] is None and back[2]["image_width"] == 320  # empty cells are nulls
    assert back[3]["error"] == "cannot identify image file" and back[3]["image_width"] is None


def test_a_published_months_parquet_reads_back_as_its_csv(containers, tmp_path) -> None:
    source = write_csv(tmp_path / "p.csv")
    written = publish(containers.output, JANUARY, source, {"month": "2024-01", "images": 3})
    published = load_published(containers.output, JANUARY)
    csv_rows = list(csv.DictReader(io.StringIO(published.predictions.decode("utf-8"))))
    parquet_rows = pq.read_table(pa.BufferReader(published.parquet)).to_pylist()
    assert written["predictions_parquet"]["rows"] == len(csv_rows) == len(parquet_rows)
    for csv_row, pq_row in zip(csv_rows, parquet_rows):
        for column in PREDICTION_COLUMNS:
            value, text = pq_row[column], csv_row[column]
            if value is None:
                assert text == "", column
            elif isinstance(value, float):
                assert float(text) == value, column
            else:
                assert text == str(value), column


def test_the_report_is_self_contained_and_shows_every_section(tmp_path) -> None:
    source = write_csv(tmp_path / "p.csv")
    summary = {
        "month": "2024-01", "outcome": "complete-with-errors", "images": 3, "shards": 2, "run_id": "manual__x",
        "skipped": {"count": 1, "first": [{"name": "202401/notes.txt", "reason": "not an image file (by extension)"}]},
        "per_day": [{"day": "2024-01-03", "images": 1, "detections": 2}, {"day": "2024-01-09", "images": 2, "detections": 0}],
        "day_basis": "date in the path",
        "shard_records": [{"shard": "shard-00000", "node_id": "tvm-1_p", "images": 2, "seconds": 4.5, "retries": 0, "exit_code": 0}],
        "compute": {"backend": "batch", "vm_size": "Standard_NC4as_T4_v3", "node_time_seconds": 7200.0,
                    "node_seconds": {"spot": 7200.0, "dedicated": 0.0}, "price_per_hour": {"spot": 0.1492, "dedicated": 0.526},
                    "currency": "USD", "cost": 0.2984, "basis": "node allocation (Batch node records)",
                    "nodes": [{"node_id": "tvm-1_p", "priority": "spot", "tasks": 1, "images": 2, "busy_seconds": 4.5,
                               "images_per_second": 0.444, "allocated_seconds": 7200.0}],
                    "price_source": "test"},
    }
    page = render_report(summary, source)
    for section in ("classes", "days", "confidence", "status", "shards", "cost"):
        assert f"id='{section}'" in page
    assert page.count("<svg") >= 4  # classes, days, confidence, shard durations: inline plots
    assert not re.search(r"""(src|href)=["']https?://""", page)  # nothing fetched from the network
    assert "cannot identify image file" in page and "202401/notes.txt" in page
    assert "0.2984 USD" in page and "tvm-1_p" in page and "2024-01-09" in page
    assert "person" in page and "bus" in page
