"""Pure decisions shared by the Batch sensors (poke mode) and triggers (deferred).

Both ask the same two questions — are the pool's nodes ready, is the job done —
so the answers live here once, with no I/O, and are easy to test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

READY_NODE_STATES = {"idle", "running"}
DEAD_NODE_STATES = {"starttaskfailed", "unusable"}


def wire_value(value) -> str:
    """An SDK enum (``str`` mixin) or a plain string, as its lower-case wire value.

    Compare every enum-valued field this way: real Batch writes some values in another case than
    the SDK's enums (``"Success"`` for an added task, ``"Spread"`` for a fill type; recorded in
    Azure/azure-sdk-assets), and azure-batch 15.1 then hands back a plain string.
    """
    return str(getattr(value, "value", value) or "").lower()


_text = wire_value


@dataclass(frozen=True)
class ErrorThreshold:
    """How many failed tasks a job may have and still succeed.

    Like Azure ML's ``error_threshold``: ``-1`` allows any number, a whole
    number is a count, and a value with ``%`` (``"5%"``) a share of all tasks.
    """

    spec: str = "0"

    def __post_init__(self) -> None:
        self.allowed(100)  # validate early: a bad value names itself

    def allowed(self, total: int) -> int | None:
        """Failed tasks allowed out of ``total``; None means unlimited."""
        text = str(self.spec).strip()
        try:
            if text.endswith("%"):
                share = float(text[:-1])
                if not 0 <= share <= 100:
                    raise ValueError
                return math.floor(total * share / 100)
            count = int(text)
        except ValueError:
            raise ValueError(
                f"error_threshold {self.spec!r} is not -1, a count >= 0, or a percentage like '5%'"
            ) from None
        if count < -1:
            raise ValueError(f"error_threshold {self.spec!r} must be -1 or >= 0")
        return None if count == -1 else count

    def exceeded(self, failed: int, total: int) -> bool:
        allowed = self.allowed(total)
        return allowed is not None and failed > allowed


@dataclass(frozen=True)
class JobProgress:
    """Task counts of one poll and the job's state, and what they mean.

    A completed job is done whatever its counts say: a terminated job (by hand, by ``on_kill`` or
    by its ``maxWallClockTime``) leaves the tasks that had not started ``active`` for ever
    ("they will remain in the active state": ``terminate_job``, azure-batch 15.1).
    """

    active: int
    running: int
    succeeded: int
    failed: int
    job_completed: bool = False
    terminate_reason: str | None = None

    @classmethod
    def from_counts(cls, counts, job=None) -> "JobProgress":
        """From ``BatchTaskCounts`` (SDK model) or its dict form, and the job (SDK model), if fetched."""
        get = counts.get if isinstance(counts, dict) else lambda key: getattr(counts, key)
        completed = bool(get("job_completed")) if isinstance(counts, dict) and "job_completed" in counts else False
        reason = counts.get("terminate_reason") if isinstance(counts, dict) else None
        if job is not None:
            completed = wire_value(job.state) == "completed"
            info = job.execution_info
            reason = info.termination_reason if info is not None else None
        return cls(active=get("active"), running=get("running"), succeeded=get("succeeded"), failed=get("failed"),
                   job_completed=completed, terminate_reason=reason)

    @property
    def unfinished(self) -> int:
        """Tasks that will never complete: the job ended before they did."""
        return self.active + self.running if self.job_completed else 0

    @property
    def completed(self) -> int:
        return self.succeeded + self.failed

    @property
    def total(self) -> int:
        return self.active + self.running + self.completed

    def counts_done(self, expected_tasks: int) -> bool:
        """Every expected task has completed (a job with fewer tasks is not done)."""
        return self.active == 0 and self.running == 0 and self.completed >= expected_tasks

    def needs_job_state(self, expected_tasks: int) -> bool:
        """Whether these counts alone cannot tell if the job is over, so the job's state must be read too.

        Terminating a job ends its running tasks and leaves the unstarted ones ``active``
        (``Job_Terminate``, REST reference), so an ended job shows tasks remaining and none
        running. While a task runs the job cannot have ended: one request a poll suffices.
        """
        return not self.counts_done(expected_tasks) and self.running == 0

    def is_done(self, expected_tasks: int) -> bool:
        """Every expected task completed, or the job itself completed (nothing more will run)."""
        return self.job_completed or self.counts_done(expected_tasks)

    def describe(self, expected_tasks: int, elapsed_s: float, done_at_start: int = 0) -> str:
        """``done/total, failed, running, rate, ETA`` — the line users watch."""
        total = max(expected_tasks, self.total)
        finished_here = self.completed - done_at_start
        rate = finished_here / elapsed_s * 60 if elapsed_s > 0 else 0.0
        remaining = total - self.completed
        if remaining <= 0:
            eta = "0s"
        elif finished_here > 0:
            eta = f"{remaining / (finished_here / elapsed_s):.0f}s"
        else:
            eta = "unknown"
        text = (
            f"{self.completed}/{total} tasks done, {self.failed} failed, {self.running} running, "
            f"{self.active} queued, {rate:.1f} tasks/min, ETA {eta}"
        )
        if self.job_completed:
            text += f"; job completed ({self.terminate_reason or 'no reason given'})"
        return text

    def as_dict(self) -> dict:
        return {"active": self.active, "running": self.running, "succeeded": self.succeeded, "failed": self.failed,
                "job_completed": self.job_completed, "terminate_reason": self.terminate_reason}


@dataclass(frozen=True)
class PoolReadiness:
    """Where a pool's nodes stand: ready to run tasks, still coming, or dead."""

    ready: int
    dead: int
    other: int
    steady: bool
    resize_errors: tuple[str, ...] = ()

    @classmethod
    def from_pool(cls, allocation_state: str | None, node_states: Iterable[str], resize_errors: Iterable[str] = ()) -> "PoolReadiness":
        states = [_text(state) for state in node_states]
        ready = sum(state in READY_NODE_STATES for state in states)
        dead = sum(state in DEAD_NODE_STATES for state in states)
        return cls(
            ready=ready, dead=dead, other=len(states) - ready - dead,
            steady=_text(allocation_state) == "steady",
            resize_errors=tuple(resize_errors),
        )

    def verdict(self, min_ready: int) -> str:
        """``ready``, ``waiting`` or ``failed``."""
        if self.ready >= min_ready:
            return "ready"
        if self.steady and self.other == 0 and (self.dead > 0 or self.resize_errors):
            return "failed"
        return "waiting"

    def describe(self) -> str:
        text = f"{self.ready} ready, {self.dead} failed (starttaskfailed/unusable), {self.other} starting"
        if self.resize_errors:
            text += "; resize errors: " + "; ".join(self.resize_errors)
        return text
