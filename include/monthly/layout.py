"""Where the monthly job keeps its blobs, and how months, runs and jobs are named.

Paths and names only: the blob names of a run's working files and of a month's
published outputs, the month's key, and one naming rule (``compute_id``) for
the Azure Batch job and pool ids and the Azure ML job name. Settings (container
names, sizes, thread counts) live in ``include.monthly.config``.

Blob layout (container names are ``DagConfig`` settings)::

    images/        YYYYMM/...any/nested/path/photo.jpg           (input, read only)
    work/          runs/YYYYMM/<run_key>/stage.json              (staging record)
                   runs/YYYYMM/<run_key>/tasks.jsonl             (Batch task descriptions, one per line)
                   runs/YYYYMM/<run_key>/manifests/shard-00000.txt
                   runs/YYYYMM/<run_key>/results/shard-00000.csv (written by scoring tasks)
                   runs/YYYYMM/<run_key>/logs/shard-00000/stdout.txt, stderr.txt
                   runs/YYYYMM/<run_key>/code/score.pyz                (the scoring zipapp Batch tasks run)
                   runs/YYYYMM/<run_key>/merged/predictions.csv (merge -> publish hand-over)
    predictions/   YYYYMM/predictions.csv, predictions.parquet, report.html, summary.json (published outputs)
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

# Azure Batch ids: letters, digits, hyphens, underscores; at most 64 characters;
# unique case-insensitively, so ours are lower-case.
BATCH_ID_MAX_LENGTH = 64

_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
_UNSAFE_RE = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month, the unit the job processes."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12 or not 1 <= self.year <= 9999:
            raise ValueError(f"not a calendar month: year={self.year!r} month={self.month!r}")

    @property
    def key(self) -> str:
        """`YYYYMM`, the folder name used in Blob storage."""
        return f"{self.year:04d}{self.month:02d}"

    @property
    def prefix(self) -> str:
        """`YYYYMM/`, the month's folder in the input and output containers."""
        return f"{self.key}/"

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @classmethod
    def of(cls, day: dt.date) -> Month:
        """The month a date (or datetime, e.g. a data interval start) falls in."""
        return cls(day.year, day.month)


def parse_month(text: str) -> Month:
    """Parse `YYYY-MM` (e.g. "2024-01"); anything else is a ValueError naming the input."""
    match = _MONTH_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"month {text!r} is not in the form YYYY-MM (e.g. 2024-01)")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        raise ValueError(f"month {text!r} has month {month:02d}; it must be 01..12")
    if year < 1:
        raise ValueError(f"month {text!r} has year {year:04d}; it must be 0001..9999")
    return Month(year, month)


def _slug(text: str, limit: int) -> str:
    """Lower-case letters, digits and single hyphens, at most `limit` characters."""
    return _UNSAFE_RE.sub("-", text.lower()).strip("-")[:limit].strip("-")


def _hash8(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:8]


def compute_id(*readable: str, digest_of: tuple[str, ...] = ()) -> str:
    """The one naming rule for what the job creates in Azure (Batch job and pool ids, the Azure ML job name).

    The readable parts joined by '-', then (when ``digest_of`` is given) 8 hex of
    their SHA-256, so inputs that slug alike still differ; at most 64 characters,
    never ending in '-'. Too long, the readable text is cut and the digest is of
    the whole text (and ``digest_of``), so what differs only in the cut tail (a
    long pool prefix ahead of a run key) still gets ids of its own. Valid as an
    Azure Batch id (letters, digits, '-', '_', ≤ 64) and as an Azure ML job name
    (the same, ≤ 255, starting with a letter or digit) when the parts are slugs,
    month keys or run keys.
    """
    text = "-".join(part for part in readable if part)
    digest = _hash8(*digest_of) if digest_of else ""
    if len(text) + (len(digest) + 1 if digest else 0) > BATCH_ID_MAX_LENGTH:
        digest = _hash8(text, *digest_of)
        text = text[: BATCH_ID_MAX_LENGTH - len(digest) - 1].rstrip("-")
    return "-".join(part for part in (text, digest) if part)


def run_key(run_id: str) -> str:
    """A short key for one Airflow run, safe in blob names and Batch ids.

    Readable (a slug of the run id) and unique (8 hex of its SHA-256): two run
    ids that slug alike, or differ only in case, still get different keys.
    """
    if not run_id:
        raise ValueError("run_id must be a non-empty string")
    return compute_id(_slug(run_id, 40), digest_of=(run_id,))


def job_id(dag_id: str, month: Month, run_id: str) -> str:
    """The job of one DAG run for one month: its Azure Batch job id and its Azure ML job name.

    Deterministic, ≤ 64 chars: the same (dag, month, run) always gives the same
    id, so a retried task finds its job instead of creating a second one; other
    months or runs never share it.
    """
    if not dag_id or not run_id:
        raise ValueError(f"dag_id and run_id must be non-empty (got {dag_id!r}, {run_id!r})")
    return compute_id(_slug(dag_id, 20), month.key, _slug(run_id, 24), digest_of=(dag_id, month.key, run_id))


def pool_id(pool_prefix: str, run_key: str) -> str:
    """The Azure Batch pool of one run: the deployment's prefix and the run key (which holds the digest)."""
    return compute_id(pool_prefix, run_key)


def shard_id(index: int) -> str:
    """`shard-00000`: the id of the index-th shard (also its Batch task id)."""
    return f"shard-{index:05d}"


@dataclass(frozen=True)
class RunPaths:
    """Blob names of one run's working files in the work container."""

    month: Month
    run_key: str

    @property
    def prefix(self) -> str:
        return f"runs/{self.month.key}/{self.run_key}/"

    @property
    def manifests_prefix(self) -> str:
        return f"{self.prefix}manifests/"

    @property
    def results_prefix(self) -> str:
        return f"{self.prefix}results/"

    @property
    def stage_record(self) -> str:
        return f"{self.prefix}stage.json"

    @property
    def task_specs(self) -> str:
        """The Batch task descriptions (JSON lines), kept in Blob so XCom carries only their location."""
        return f"{self.prefix}tasks.jsonl"

    def manifest(self, shard: str) -> str:
        return f"{self.manifests_prefix}{shard}.txt"

    def result(self, shard: str) -> str:
        return f"{self.results_prefix}{shard}.csv"

    def logs_prefix(self, shard: str) -> str:
        return f"{self.prefix}logs/{shard}/"

    def log(self, shard: str, stream: str) -> str:
        """`stream` is "stdout" or "stderr"."""
        return f"{self.logs_prefix(shard)}{stream}.txt"

    def code(self, name: str) -> str:
        """The run's copy of a file the nodes need (the scoring zipapp, the weights)."""
        return f"{self.prefix}code/{name}"

    @property
    def merged_predictions(self) -> str:
        """The merged CSV, kept in the work container between the merge and publish tasks."""
        return f"{self.prefix}merged/predictions.csv"


@dataclass(frozen=True)
class OutputPaths:
    """Blob names of one month's published outputs in the output container."""

    month: Month

    @property
    def predictions(self) -> str:
        return f"{self.month.prefix}predictions.csv"

    @property
    def summary(self) -> str:
        return f"{self.month.prefix}summary.json"

    @property
    def parquet(self) -> str:
        return f"{self.month.prefix}predictions.parquet"

    @property
    def report(self) -> str:
        return f"{self.month.prefix}report.html"
