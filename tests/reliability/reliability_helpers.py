"""Helpers of the reliability tests: run a month, read what it published, act mid-run."""
from __future__ import annotations

import csv
import io
import threading
import time
from typing import Callable


from azure.storage.blob import BlobServiceClient

from include.monthly.layout import Month
from include.monthly.publish import load_published


def run_month(dag, capfd, month: str, logical_date=None, **conf) -> tuple[str, dict[str, str], str, str]:
    """dag.test() one month; returns (run state, task states, captured log, run id)."""
    kwargs = {"logical_date": logical_date, "run_after": logical_date} if logical_date else {}
    run = dag.test(run_conf={"month": month, **conf}, **kwargs)
    out, err = capfd.readouterr()
    return str(run.state), {ti.task_id: str(ti.state) for ti in run.get_task_instances()}, out + err, run.run_id


def published_rows(storage: BlobServiceClient, month: Month) -> tuple[list[dict], dict]:
    published = load_published(storage.get_container_client("predictions"), month)
    return list(csv.DictReader(io.StringIO(published.predictions.decode("utf-8")))), published.summary


def assert_each_image_once(rows: list[dict], images: set[str]) -> None:
    """Every image has rows and no row appears twice (a shard merged or scored twice would repeat rows)."""
    assert {row["image"] for row in rows} == images
    keys = [tuple(row.values()) for row in rows]
    assert len(keys) == len(set(keys)), "a row appears twice"


def month_images(storage: BlobServiceClient, month: Month) -> set[str]:
    """The month's blobs that are scored (everything but the .txt files)."""
    return {b.name for b in storage.get_container_client("images").list_blobs(name_starts_with=month.prefix)
            if not b.name.endswith(".txt")}


def upload(storage: BlobServiceClient, month: Month, blobs: list[tuple[str, bytes]]) -> None:
    """Replace a month's input folder with these blobs (names relative to the month folder)."""
    images = storage.get_container_client("images")
    for blob in images.list_blobs(name_starts_with=month.prefix):
        images.delete_blob(blob.name)
    for name, data in blobs:
        images.upload_blob(month.prefix + name, data, overwrite=True)


class WhenTaskRuns:
    """Call ``action(job_id, pool_id)`` on a thread as soon as a task of a month's job is running."""

    def __init__(self, client, month: Month, action: Callable[[str, str], object], timeout: float = 300) -> None:
        self.client = client
        self.prefix = f"monthly-detection-{month.key}-"
        self.action = action
        self.timeout = timeout
        self.result: object = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "WhenTaskRuns":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._thread.join(timeout=self.timeout)

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline:
                jobs = [j for j in self.client.list_jobs() if j.id.startswith(self.prefix) and j.state == "active"]
                for job in jobs:
                    running = list(self.client.list_tasks(job.id, filter="state eq 'running'", select=["id"]))
                    if running:
                        self.result = self.action(job.id, job.pool_info.pool_id)
                        return
                time.sleep(0.2)
            raise TimeoutError(f"no task of a {self.prefix}* job ran within {self.timeout} s")
        except BaseException as err:  # noqa: BLE001 - reported by the test
            self.error = err
        finally:
            self.done.set()
