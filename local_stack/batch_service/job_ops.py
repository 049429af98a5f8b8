"""Job operations beyond create/get/update/terminate/delete: disable and enable, and two read-only lists.

REST spec operation names: Job_Disable, Job_Enable, Job_ListPreparationAndReleaseTaskStatus,
Task_ListSubtasks. Semantics from the azure-batch 15.1 docstrings: disabling stops new tasks from
starting; `disableTasks` says what happens to running ones (requeue: stopped and run again later,
terminate: ended as failed, wait: left to finish); an enabled job schedules again.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from local_stack.batch_service.errors import BatchServiceError, invalid_property, missing_property
from local_stack.batch_service.formats import now_iso

if TYPE_CHECKING:
    from local_stack.batch_service.server import BatchApp, Call

DISABLE_OPTIONS = ("requeue", "terminate", "wait")


def register(app: "BatchApp") -> None:
    r = app._route
    r("POST", "/jobs/{job}/disable", "Job_Disable", lambda call: disable_job(app, call))
    r("POST", "/jobs/{job}/enable", "Job_Enable", lambda call: enable_job(app, call))
    r("GET", "/jobs/{job}/jobpreparationandreleasetaskstatus", "Job_ListPreparationAndReleaseTaskStatus",
      lambda call: preparation_status(app, call))
    r("GET", "/jobs/{job}/tasks/{task}/subtasksinfo", "Task_ListSubtasks", lambda call: subtasks(app, call))


def _set_state(job: dict, state: str) -> None:
    job["previousState"], job["previousStateTransitionTime"] = job["state"], job.get("stateTransitionTime")
    job["state"], job["stateTransitionTime"] = state, now_iso()


async def disable_job(app: "BatchApp", call: "Call"):
    body = await call.body()
    option = body.get("disableTasks")
    if not option:
        raise missing_property("disableTasks")
    if str(option).lower() not in DISABLE_OPTIONS:
        raise invalid_property("disableTasks", option, f"One of {', '.join(DISABLE_OPTIONS)}.")
    engine = app.engine
    with engine.lock:
        job = engine._job(call.params["job"])
        if job["state"] != "active":
            code = "JobDisabled" if job["state"] == "disabled" else "JobNotActive"
            raise BatchServiceError(409, code, f"The specified job is {job['state']}; only an active job can be disabled.")
        disable(engine, job, option.lower())
    return app._empty(202, job)


def disable(engine, job: dict, option: str) -> None:
    """Disable an active job (also the `disable` jobAction of a task's exit options, with requeue)."""
    _set_state(job, "disabling")
    for task in list(engine.tasks[job["id"]].values()):
        if task["state"] not in ("running", "preparing"):
            continue
        if option == "requeue":
            engine._kill_task(job["id"], task, "requeued")
            engine._requeue(job["id"], task, count=False)
        elif option == "terminate":
            engine._end_task(job["id"], task, "The task was ended because its job was disabled.")
    _set_state(job, "disabled")
    engine._touch(job)
    engine.store.save_job(job)


async def enable_job(app: "BatchApp", call: "Call"):
    engine = app.engine
    with engine.lock:
        job = engine._job(call.params["job"])
        if job["state"] != "disabled":
            raise BatchServiceError(409, "OperationInvalidForCurrentState",
                                    f"The specified job is {job['state']}; only a disabled job can be enabled.")
        _set_state(job, "enabling")
        _set_state(job, "active")
        engine._touch(job)
        engine.store.save_job(job)
        engine.wake()
    return app._empty(202, job)


async def preparation_status(app: "BatchApp", call: "Call"):
    """One entry per node that ran the job's preparation task (see job_prep.py)."""
    engine = app.engine
    with engine.lock:
        job = engine._job(call.params["job"])
        docs = list((job.get("_prepStatus") or {}).values())
    return app._page(call, docs)


async def subtasks(app: "BatchApp", call: "Call"):
    """Multi-instance tasks are refused at add time, so no task has subtasks."""
    app.engine.get_task(call.params["job"], call.params["task"])
    return app._json({"value": []})
