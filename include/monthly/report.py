"""The month's report.html: one self-contained page an analyst can open (plots inline as SVG, no network).

Built from the merged predictions.csv and the month's summary (which carries
the per-day counts, the shard and node records and the cost), so the DAG and
``make report MONTH=YYYY-MM`` (from the published outputs) write the same page.

    scripts/local-env python -m include.monthly.report --month 2024-01 [--output demo-output]
"""
from __future__ import annotations

import argparse
import csv
import html
import io
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIDENCE_BINS = 20
TOP_CLASSES = 25
TOP_REASONS = 20


@dataclass
class CsvFigures:
    """What the report needs from the CSV, read in one pass (memory bounded by classes and reasons)."""

    detections_per_class: Counter = field(default_factory=Counter)
    confidence_bins: list[int] = field(default_factory=lambda: [0] * CONFIDENCE_BINS)
    status_counts: Counter = field(default_factory=Counter)  # images per status
    error_reasons: Counter = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)


def read_csv_figures(predictions_csv: Path) -> CsvFigures:
    figures = CsvFigures()
    seen: set[str] = set()
    with open(predictions_csv, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            status = row["status"]
            if row["image"] not in seen:
                seen.add(row["image"])
                figures.status_counts[status] += 1
            if status == "ok":
                figures.detections_per_class[row["class_name"]] += 1
                conf = float(row["confidence"])
                figures.confidence_bins[min(CONFIDENCE_BINS - 1, int(conf * CONFIDENCE_BINS))] += 1
            elif status == "error":
                reason = (row["error"] or "(no reason given)").strip()
                key = reason if len(reason) <= 160 else reason[:157] + "..."
                figures.error_reasons[key] += 1
                figures.error_examples.setdefault(key, row["image"])
    return figures


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # inline: drop the XML prolog and doctype


def _bar(labels: list[str], values: list[float], title: str, xlabel: str, horizontal: bool = True,
         second: list[float] | None = None, second_label: str = "") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not labels:
        return "<p class='muted'>nothing to plot</p>"
    if horizontal:
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(labels) + 1.2))
        ax.barh(labels[::-1], values[::-1], color="#3b7dd8")
        ax.set_xlabel(xlabel)
    else:
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(labels) + 2), 3.2))
        positions = range(len(labels))
        width = 0.4 if second is not None else 0.8
        ax.bar([p - (width / 2 if second is not None else 0) for p in positions], values, width, color="#3b7dd8",
               label=xlabel)
        if second is not None:
            ax.bar([p + width / 2 for p in positions], second, width, color="#e39b2d", label=second_label)
            ax.legend()
        ax.set_ylabel(xlabel if second is None else "")
        ax.set_xticks(list(positions), labels, rotation=60 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _histogram(bins: list[int]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(bins):
        return "<p class='muted'>no detections</p>"
    fig, ax = plt.subplots(figsize=(7, 3))
    width = 1 / len(bins)
    ax.bar([i * width for i in range(len(bins))], bins, width=width, align="edge", color="#3b7dd8", edgecolor="white")
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("detections")
    ax.set_title("Confidence distribution")
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "<p class='muted'>none</p>"
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2733;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #d8dee6;padding-bottom:.3rem;margin-top:2.2rem}
.muted{color:#6b7785} .cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.card{background:#f3f6fa;border-radius:8px;padding:.7rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.4rem} table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #d8dee6;padding:.3rem .6rem;text-align:left;vertical-align:top} th{background:#f3f6fa}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1.5rem;align-items:start} svg{max-width:100%;height:auto}
code{background:#f3f6fa;padding:0 .2rem}
"""


def render_report(summary: dict[str, Any], predictions_csv: Path) -> str:
    """The report page for one month (every section present; a missing figure says why)."""
    figures = read_csv_figures(predictions_csv)
    esc = html.escape
    month = summary.get("month", "?")
    compute = summary.get("compute") or {}
    classes = figures.detections_per_class.most_common(TOP_CLASSES)
    days = summary.get("per_day") or []
    shards = summary.get("shard_records") or []
    nodes = compute.get("nodes") or []
    status_counts = dict(figures.status_counts) or dict(summary.get("status_counts") or {})
    cost = compute.get("cost")
    currency = compute.get("currency", "")
    cost_text = (f"{cost:.4f} {currency}" if cost is not None
                 else "unknown: no price for " + ", ".join(compute.get("cost_missing_prices") or ["this backend"]))
    cards = [
        ("outcome", summary.get("outcome")), ("images", summary.get("images")),
        ("detections", sum(figures.detections_per_class.values())), ("error images", status_counts.get("error", 0)),
        ("shards", summary.get("shards")), ("node time", _duration(compute.get("node_time_seconds", summary.get("node_time_seconds")))),
        ("cost", cost_text if cost is None else f"{cost:.2f} {currency}" if cost >= 1 else f"{cost:.4f} {currency}"), ("wall time", _duration(summary.get("wall_time_seconds"))),
    ]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Monthly detection report {esc(str(month))}</title><style>{STYLE}</style></head><body>",
        f"<h1>Monthly detection report: {esc(str(month))}</h1>",
        f"<p class='muted'>run <code>{esc(str(summary.get('run_id', '')))}</code>, source "
        f"<code>{esc(str((summary.get('source') or {}).get('container', '')))}/{esc(str((summary.get('source') or {}).get('prefix', '')))}</code>"
        f", backend {esc(str(compute.get('backend', '-')))}</p>",
        "<div class='cards'>" + "".join(f"<div class='card'><span class='muted'>{esc(k)}</span><b>{esc(_fmt(v))}</b></div>"
                                       for k, v in cards) + "</div>",
        "<h2 id='classes'>Detections per class</h2><div class='grid'>",
        _bar([c for c, _ in classes], [n for _, n in classes], "Detections per class", "detections"),
        _table(["class", "detections"], [[c, n] for c, n in classes]),
        "</div>",
        "<h2 id='days'>Images and detections per day</h2>",
        f"<p class='muted'>day of each image: {esc(str(summary.get('day_basis', 'unknown')))}</p><div class='grid'>",
        _bar([d["day"] for d in days], [d["images"] for d in days], "Per day", "images", horizontal=False,
             second=[d["detections"] for d in days], second_label="detections"),
        _table(["day", "images", "detections"], [[d["day"], d["images"], d["detections"]] for d in days]),
        "</div>",
        "<h2 id='confidence'>Confidence distribution</h2>",
        _histogram(figures.confidence_bins),
        "<h2 id='status'>Status counts and error reasons</h2><div class='grid'><div>",
        _table(["status", "images"], sorted(status_counts.items())),
        "<h3>Error reasons</h3>",
        _table(["reason", "images", "e.g."], [[r, n, figures.error_examples[r]] for r, n in figures.error_reasons.most_common(TOP_REASONS)]),
        "</div><div><h3>Skipped files (not scored)</h3>",
        f"<p>{esc(str((summary.get('skipped') or {}).get('count', 0)))} skipped</p>",
        _table(["file", "reason"], [[s["name"], s["reason"]] for s in (summary.get("skipped") or {}).get("first", [])]),
        "<h3>Failed shards</h3>",
        _table(["shard", "reason"], [[k, v] for k, v in (summary.get("failed_shards") or {}).items()]),
        "</div></div>",
        "<h2 id='shards'>Shard durations and throughput per node</h2>",
        _bar([s["shard"] for s in shards], [s.get("seconds") or 0 for s in shards], "Shard durations", "seconds", horizontal=False)
        if shards else f"<p class='muted'>no shard records for backend {esc(str(compute.get('backend', '-')))}</p>",
        _table(["shard", "node", "images", "duration", "retries", "exit code"],
               [[s["shard"], s.get("node_id"), s.get("images"), _duration(s.get("seconds")), s.get("retries"), s.get("exit_code")]
                for s in shards]),
        "<h3>Per node</h3>",
        _table(["node", "priority", "tasks", "images", "busy", "images/s", "allocated"],
               [[n["node_id"], n["priority"], n["tasks"], n["images"], _duration(n["busy_seconds"]), n.get("images_per_second"),
                 _duration(n.get("allocated_seconds"))] for n in nodes]),
        "<h2 id='cost'>Node time and cost</h2>",
        _table(["", "spot", "dedicated"], [
            ["node time", _duration((compute.get("node_seconds") or {}).get("spot", 0.0)),
             _duration((compute.get("node_seconds") or {}).get("dedicated", 0.0))],
            [f"price per node-hour ({currency})", (compute.get("price_per_hour") or {}).get("spot"),
             (compute.get("price_per_hour") or {}).get("dedicated")],
        ]),
        f"<p><b>Compute cost of the month: {esc(cost_text)}</b> for {esc(_duration(compute.get('node_time_seconds')))} of "
        f"{esc(str(compute.get('vm_size', '-')))} node time.</p>",
        f"<p class='muted'>node time basis: {esc(str(compute.get('basis', '-')))}; prices: "
        f"{esc(str(compute.get('price_source', '-')))}</p>",
        "<h2 id='files'>Files</h2>",
        _table(["file", "bytes", "sha256"], [[f.get("blob"), f.get("bytes"), f.get("sha256")]
                                              for f in (summary.get("predictions"), summary.get("predictions_parquet")) if f]),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(summary: dict[str, Any], predictions_csv: Path, out_path: Path) -> Path:
    out_path.write_text(render_report(summary, predictions_csv), encoding="utf-8")
    return out_path


def main(argv: list[str] | None = None) -> int:
    """``make report MONTH=YYYY-MM``: the report of a published month, written under ``--output/YYYYMM/``."""
    from azure.storage.blob import BlobServiceClient

    from include.monthly.config import DagConfig
    from include.monthly.layout import parse_month
    from include.monthly.publish import save_published

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--month", required=True, help="YYYY-MM")
    parser.add_argument("--output", default="demo-output")
    parser.add_argument("--container", default=DagConfig.output_container)
    args = parser.parse_args(argv)
    service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    folder = save_published(service.get_container_client(args.container), parse_month(args.month), Path(args.output))
    import json

    summary = json.loads((folder / "summary.json").read_text())
    path = write_report(summary, folder / "predictions.csv", folder / "report.html")
    print(f"report of {args.month}: {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
