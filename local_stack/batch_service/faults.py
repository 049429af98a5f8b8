"""Injected faults and request counting for the `/_emulator/` endpoints (not part of Azure's API).

Faults live in memory only: a restart clears them, counts start again at zero.
"""
from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field

from local_stack.batch_service.errors import BatchServiceError

HTTP_FAULT_CODES = {500: "InternalError", 503: "ServerBusy", 429: "TooManyRequests"}

#: Pool resize error codes a fault may report, with our wording of their meaning. The codes are
#: Azure's (PoolResizeErrorCodes in the Batch .NET SDK reference); the real messages are not
#: published, so these are not Azure's text.
RESIZE_ERROR_CODES = {
    "AccountCoreQuotaReached": "The account has reached its dedicated core quota.",
    "AccountLowPriorityCoreQuotaReached": "The account has reached its low-priority core quota.",
    "AccountSpotCoreQuotaReached": "The account has reached its spot core quota.",
    "AllocationFailed": "The desired number of nodes could not be allocated.",
    "AllocationTimedOut": "The desired number of nodes could not be allocated within the resize timeout.",
}


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


@dataclass
class ResizeFault:
    """The next `count` growing resizes of matching pools stop after `allocate` new nodes with `code`."""

    pool_id: re.Pattern
    code: str
    message: str
    count: int
    allocate: int = 0


@dataclass
class PoolTiming:
    """Seconds a resize takes to add nodes, to remove nodes, and to stop (None: the service's option)."""

    allocation: float | None = None
    removal: float | None = None
    stop: float | None = None


class Faults:
    """The registry the HTTP layer and the task runner consult."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.http: list[HttpFault] = []
        self.task_exit: list[TaskExitFault] = []
        self.resize: list[ResizeFault] = []
        self.timing = PoolTiming()
        self.requests: Counter = Counter()

    def add(self, spec: dict) -> dict:
        """Register an http, task_exit, resize_error or pool_timing fault from its JSON; returns a description."""
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
            if kind == "resize_error":
                code = spec.get("code") or "AllocationFailed"
                if code not in RESIZE_ERROR_CODES:
                    raise ValueError(f"code must be one of {sorted(RESIZE_ERROR_CODES)}")
                resize = ResizeFault(
                    pool_id=re.compile(spec.get("poolId") or ".*"),
                    code=code,
                    message=str(spec.get("message") or RESIZE_ERROR_CODES[code]),
                    count=int(spec.get("count", 1)),
                    allocate=int(spec.get("allocate", 0)),
                )
                if resize.allocate < 0 or resize.count < 1:
                    raise ValueError("allocate must be >= 0 and count >= 1")
                with self._lock:
                    self.resize.append(resize)
                return {"kind": "resize_error", "code": resize.code, "count": resize.count}
            if kind == "pool_timing":
                timing = PoolTiming(*(None if spec.get(k) is None else float(spec[k])
                                      for k in ("allocationSeconds", "removalSeconds", "stopSeconds")))
                if any(v is not None and v < 0 for v in vars(timing).values()):
                    raise ValueError("seconds must be >= 0")
                with self._lock:
                    self.timing = timing
                return {"kind": "pool_timing", **vars(timing)}
        except (ValueError, TypeError, re.error) as exc:
            raise BatchServiceError(400, "InvalidFault", f"Invalid fault: {exc}") from None
        raise BatchServiceError(400, "InvalidFault",
                                f"Unknown fault kind {kind!r}; use http, preempt, task_exit, resize_error or pool_timing.")

    def clear(self) -> None:
        with self._lock:
            self.http.clear()
            self.task_exit.clear()
            self.resize.clear()
            self.timing = PoolTiming()

    def describe(self) -> list[dict]:
        with self._lock:
            return [
                {"kind": "http", "path": f.path.pattern, "method": f.method, "status": f.status, "remaining": f.count}
                for f in self.http
            ] + [
                {"kind": "task_exit", "taskId": f.task_id.pattern, "exitCode": f.exit_code, "attempts": f.attempts}
                for f in self.task_exit
            ] + [
                {"kind": "resize_error", "poolId": f.pool_id.pattern, "code": f.code, "remaining": f.count}
                for f in self.resize
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

    def take_resize(self, pool_id: str) -> ResizeFault | None:
        """The fault that ends this growing resize of the pool, consuming one of its count."""
        with self._lock:
            for fault in self.resize:
                if fault.pool_id.search(pool_id):
                    fault.count -= 1
                    if fault.count == 0:
                        self.resize.remove(fault)
                    return fault
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
