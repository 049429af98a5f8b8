"""Task dependencies (`dependsOn`), as the azure-batch 15.1 docstrings describe them.

A task that depends on others stays active, not scheduled, until every task it names (ids, and id
ranges over tasks with integer ids) has completed and its outcome satisfies dependents: success
does; failure blocks unless the exit options that applied say `dependencyAction: satisfy`.
A dependency on a task that does not exist yet keeps the task waiting. A job without
`usesTaskDependencies` refuses such tasks with `TaskDependenciesNotSpecifiedOnJob` (Batch Status and
Error Codes).
"""
from __future__ import annotations

from local_stack.batch_service.errors import BatchServiceError


def check_add(job: dict, body: dict) -> None:
    if body.get("dependsOn") and not job.get("usesTaskDependencies"):
        raise BatchServiceError(400, "TaskDependenciesNotSpecifiedOnJob",
                                "A task was specified as depending on other tasks, but the job did not specify that it would use task dependencies.")


def _exit_options(task: dict) -> dict:
    info = task.get("executionInfo") or {}
    code = info.get("exitCode")
    conditions = task.get("exitConditions") or {}
    options = conditions.get("default") or {}
    for mapping in conditions.get("exitCodes") or []:
        if mapping.get("code") == code:
            return mapping.get("exitOptions") or options
    for rng in conditions.get("exitCodeRanges") or []:
        if code is not None and rng.get("start", 0) <= code <= rng.get("end", -1):
            return rng.get("exitOptions") or options
    return options


def _satisfies(task: dict | None) -> bool:
    if task is None or task["state"] != "completed":
        return False
    if (task.get("executionInfo") or {}).get("result") == "success":
        return _exit_options(task).get("dependencyAction", "satisfy") == "satisfy"
    return _exit_options(task).get("dependencyAction", "block") == "satisfy"


def satisfied(job_tasks: dict[str, dict], task: dict) -> bool:
    """True when the task may be scheduled (it has no dependencies, or all are satisfied)."""
    depends = task.get("dependsOn")
    if not depends:
        return True
    if not all(_satisfies(job_tasks.get(dep)) for dep in depends.get("taskIds") or []):
        return False
    for rng in depends.get("taskIdRanges") or []:
        start, end = rng.get("start", 0), rng.get("end", -1)
        ranged = [t for tid, t in job_tasks.items() if tid.isdigit() and start <= int(tid) <= end]
        if not ranged or not all(_satisfies(t) for t in ranged):
            return False
    return True
