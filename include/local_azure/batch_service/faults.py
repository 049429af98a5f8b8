"""Injected faults and request counting for the `/_emulator/` endpoints (not part of Azure's API).

Faults live in memory only: a restart clears them, counts start again at zero.
"""
from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field

from include.local_azure.batch_service.errors import BatchServiceError

HTTP_FAULT_CODES = {500: "InternalError", 503: "ServerBusy", 429: "TooManyRequests"}


@dataclass
class HttpFault:
    """Answer the next `count` requests matching method and path regex with `status`."""

    path: re.Pattern
    status: int
    count: int
    method: str | None = None
    retry_after: int | None = None


@dataclass
class TaskExitFault:
    """The first `attempts` runs of each matching task exit with `exit_code` without running."""

    task_id: re.Pattern
    exit_code: int
    attempts: int
    job_id: re.Pattern | None = None
    used: Counter = field(default_factory=Counter)


class Faults:
    """The registry the HTTP layer and the task runner consult."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.http: list[HttpFault] = []
        self.task_exit: list[TaskExitFault] = []
        self.requests: Counter = Counter()

    def add(self, spec: dict) -> dict:
        """Register an http or task_exit fault from its JSON; returns a description."""
        kind = spec.get("kind")
        try:
            if kind == "http":
                status = int(spec.get("status", 503))
                if not 400 <= status <= 599:
                    raise ValueError("status must be an HTTP error status (4xx or 5xx)")
                fault = HttpFault(
                    path=re.compile(spec.get("path") or ".*"),
                    status=status,
                    count=int(spec.get("count", 1)),
                    method=(spec.get("method") or "").upper() or None,
                    retry_after=int(spec["retryAfter"]) if spec.get("retryAfter") is not None else None,
                )
                with self._lock:
                    self.http.append(fault)
                return {"kind": "http", "status": fault.status, "count": fault.count}
            if kind == "task_exit":
                exit_code = int(spec.get("exitCode", 1))
                if exit_code == 0:
                    raise ValueError("exitCode must be non-zero")
                fault = TaskExitFault(
                    task_id=re.compile(spec.get("taskId") or ".*"),
                    exit_code=exit_code,
                    attempts=int(spec.get("attempts", 1)),
                    job_id=re.compile(spec["jobId"]) if spec.get("jobId") else None,
                )
                with self._lock:
                    self.task_exit.append(fault)
                return {"kind": "task_exit", "exitCode": fault.exit_code, "attempts": fault.attempts}
        except (ValueError, TypeError, re.error) as exc:
            raise BatchServiceError(400, "InvalidFault", f"Invalid fault: {exc}") from None
        raise BatchServiceError(400, "InvalidFault", f"Unknown fault kind {kind!r}; use http, preempt or task_exit.")

    def clear(self) -> None:
        with self._lock:
            self.http.clear()
            self.task_exit.clear()

    def describe(self) -> list[dict]:
        with self._lock:
            return [
                {"kind": "http", "path": f.path.pattern, "method": f.method, "status": f.status, "remaining": f.count}
                for f in self.http
            ] + [
                {"kind": "task_exit", "taskId": f.task_id.pattern, "exitCode": f.exit_code, "attempts": f.attempts}
                for f in self.task_exit
            ]

    def take_http(self, method: str, path: str) -> HttpFault | None:
        """The fault that answers this request, consuming one of its count."""
        with self._lock:
            for fault in self.http:
                if fault.count > 0 and (fault.method in (None, method)) and fault.path.search(path):
                    fault.count -= 1
                    if fault.count == 0:
                        self.http.remove(fault)
                    return fault
        return None

    def take_task_exit(self, job_id: str, task_id: str) -> int | None:
        """The exit code forced on this attempt of the task, if a fault claims it."""
        with self._lock:
            for fault in self.task_exit:
                if fault.task_id.search(task_id) and (fault.job_id is None or fault.job_id.search(job_id)):
                    key = (job_id, task_id)
                    if fault.used[key] < fault.attempts:
                        fault.used[key] += 1
                        return fault.exit_code
        return None

    def count(self, operation: str) -> None:
        with self._lock:
            self.requests[operation] += 1

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self.requests.items()))

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
