"""Job preparation and release tasks, as the azure-batch 15.1 docstrings (BatchJobPreparationTask,
BatchJobReleaseTask) describe them.

Preparation: runs on a node before the first task of the job runs there; with `waitForSuccess`
(default true) no task of the job starts on that node until it succeeded; when it fails after its
`maxTaskRetryCount` retries, tasks of the job are not run on that node. Release: runs when the job
has completed, on every node where the preparation task ran. Their state per node is what
Job_ListPreparationAndReleaseTaskStatus lists. Differences: a job does not wait in `terminating` for
its release tasks here (it completes at once; the release tasks run after), and a node reboot does not
rerun a preparation task.
"""
from __future__ import annotations

import threading

from local_stack.batch_service import task_process
from local_stack.batch_service.formats import now_iso


def _status(job: dict, pool_id: str, node: dict) -> dict:
    statuses = job.setdefault("_prepStatus", {})
    return statuses.setdefault(node["id"], {"poolId": pool_id, "nodeId": node["id"], "nodeUrl": node["url"]})


def ready(engine, job: dict, pool: dict, node: dict) -> bool:
    """May a task of this job start on this node now? Starts the preparation task when it has not run."""
    prep = job.get("jobPreparationTask")
    if not prep:
        return True
    status = _status(job, pool["id"], node)
    info = status.get("jobPreparationTaskExecutionInfo")
    if info is None:
        _start(engine, job, pool["id"], node, "jobPreparationTask", "jobpreparation")
        return not prep.get("waitForSuccess", True)
    if info["state"] == "running":
        return not prep.get("waitForSuccess", True)
    return info.get("result") == "success" or not prep.get("waitForSuccess", True)


def release_completed_jobs(engine) -> None:
    """Start the release task on each node that ran the preparation task of a job that completed."""
    for job in engine.jobs.values():
        if job["state"] != "completed" or not job.get("jobReleaseTask"):
            continue
        for node_id, status in (job.get("_prepStatus") or {}).items():
            node = engine.nodes.get(status["poolId"], {}).get(node_id)
            if node is not None and "jobReleaseTaskExecutionInfo" not in status:
                _start(engine, job, status["poolId"], node, "jobReleaseTask", "jobrelease")


def releasing(job: dict | None) -> bool:
    """A release task is still running for this job (its auto pool must stay until it ends)."""
    statuses = (job or {}).get("_prepStatus") or {}
    return any((s.get("jobReleaseTaskExecutionInfo") or {}).get("state") == "running" for s in statuses.values())


def _start(engine, job: dict, pool_id: str, node: dict, kind: str, folder: str) -> None:
    spec = job[kind]
    task_dir = engine._node_dir(pool_id, node["id"]) / "workitems" / job["id"] / "job-1" / folder
    info = {"state": "running", "startTime": now_iso(), "taskRootDirectory": str(task_dir),
            "taskRootDirectoryUrl": f"{node['url']}/files/workitems/{job['id']}/job-1/{folder}", "retryCount": 0}
    _status(job, pool_id, node)[f"{kind}ExecutionInfo"] = info
    env = task_process.task_environment(
        engine._home(pool_id, node["id"], spec.get("userIdentity"), f"{job['id']}-{folder}"),
        {**engine._batch_vars(pool_id, node["id"], node.get("isDedicated", True)),
         "AZ_BATCH_JOB_ID": job["id"], "AZ_BATCH_TASK_ID": spec.get("id") or folder,
         "AZ_BATCH_TASK_DIR": str(task_dir), "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd"),
         "AZ_BATCH_JOB_PREP_DIR": str(task_dir.parent / "jobpreparation"),
         "AZ_BATCH_JOB_PREP_WORKING_DIR": str(task_dir.parent / "jobpreparation" / "wd")},
        job.get("commonEnvironmentSettings"), spec.get("environmentSettings"))
    retries = (spec.get("constraints") or {}).get("maxTaskRetryCount") or 0 if kind == "jobPreparationTask" else 0
    threading.Thread(target=_run, args=(engine, job["id"], pool_id, node["id"], node.get("_boot"), kind, dict(spec),
                                        task_dir, env, retries), daemon=True).start()
    engine.store.save_job(job)


def _run(engine, job_id: str, pool_id: str, node_id: str, boot, kind: str, spec: dict, task_dir, env, retries: int) -> None:
    retry = 0
    while True:
        exit_code, failure = engine._execute((kind, pool_id, node_id), boot, spec, task_dir, task_dir / "wd", env, None,
                                             engine._runtime(pool_id, spec.get("containerSettings")))
        if exit_code is None and failure is None:
            return  # the node went away
        if (failure or exit_code) and (retries == -1 or retry < retries):
            retry += 1
            continue
        break
    with engine.lock:
        job = engine.jobs.get(job_id)
        status = ((job or {}).get("_prepStatus") or {}).get(node_id)
        if engine._stop.is_set() or status is None:
            return
        info = status[f"{kind}ExecutionInfo"]
        info.update(state="completed", endTime=now_iso(), retryCount=retry)
        if exit_code is not None:
            info["exitCode"] = exit_code
        if failure is None and exit_code:
            failure = {"category": "usererror", "code": "FailureExitCode",
                       "message": "The task exited with an exit code representing a failure"}
        info["result"] = "failure" if failure else "success"
        if failure:
            info["failureInfo"] = failure
        engine.store.save_job(job)
        engine.wake()
