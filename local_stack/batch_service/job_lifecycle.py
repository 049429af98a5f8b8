"""Jobs: create (with an auto pool), update, terminate, delete, task counts, and completing jobs.

Disable and enable, and the read-only job lists, are HTTP handlers in job_ops.py.
"""
from __future__ import annotations

from local_stack.batch_service import autopool, supported
from local_stack.batch_service.account_state import MAX_DURATION, AccountState, JobCounters, check_duration, check_id
from local_stack.batch_service.errors import BatchServiceError, exists, invalid_property, missing_property
from local_stack.batch_service.formats import elapsed_since, now_iso, parse_duration


class JobLifecycle(AccountState):
    """Job operations of the HTTP layer, and the scheduler's check for jobs that are done."""

    def create_job(self, body: dict) -> dict:
        with self.lock:
            job_id = check_id("job", body)
            if self._job_key(job_id):
                raise exists("Job")
            supported.check_job(body)
            pool_info = body.get("poolInfo") or {}
            if not pool_info.get("poolId") and not pool_info.get("autoPoolSpecification"):
                raise missing_property("poolInfo.poolId")
            constraints = body.get("constraints") or {}
            check_duration("constraints.maxWallClockTime", constraints.get("maxWallClockTime"))
            now = now_iso()
            job = {
                "id": job_id,
                "displayName": body.get("displayName"),
                "url": self._url("jobs", job_id),
                "creationTime": now,
                "state": "active",
                "stateTransitionTime": now,
                "priority": body.get("priority") or 0,
                "maxParallelTasks": body.get("maxParallelTasks", -1),
                "usesTaskDependencies": bool(body.get("usesTaskDependencies")),
                "constraints": {"maxWallClockTime": constraints.get("maxWallClockTime") or MAX_DURATION,
                                "maxTaskRetryCount": constraints.get("maxTaskRetryCount") or 0},
                "commonEnvironmentSettings": body.get("commonEnvironmentSettings"),
                "poolInfo": pool_info,
                "onAllTasksComplete": body.get("onAllTasksComplete") or "noaction",
                "onTaskFailure": body.get("onTaskFailure") or "noaction",
                "metadata": body.get("metadata"),
                "jobPreparationTask": body.get("jobPreparationTask"),
                "jobReleaseTask": body.get("jobReleaseTask"),
                "executionInfo": {"startTime": now, "poolId": pool_info.get("poolId")},
            }
            if not pool_info.get("poolId"):
                job["executionInfo"]["poolId"] = autopool.create_for_job(self, job_id, pool_info["autoPoolSpecification"])
            job = {k: v for k, v in job.items() if v is not None}
            self._touch(job)
            self.jobs[job_id] = job
            self.tasks[job_id] = {}
            self.task_keys[job_id] = {}
            self.queue[job_id] = {}
            self.counters[job_id] = JobCounters()
            self.store.save_job(job)
            self.wake()
            return job

    def get_job(self, job_id: str) -> dict:
        with self.lock:
            return self._job(job_id)

    def list_jobs(self) -> list[dict]:
        with self.lock:
            return list(self.jobs.values())

    def update_job(self, job_id: str, body: dict, replace: bool = False) -> dict:
        with self.lock:
            job = self._job(job_id)
            if job["state"] in ("completed", "terminating", "deleting"):
                raise BatchServiceError(409, "JobCompleted" if job["state"] == "completed" else "JobBeingTerminated",
                                        f"The specified job is {job['state']}.")
            if job.get("onAllTasksComplete") == "terminatejob" and body.get("onAllTasksComplete") == "noaction":
                raise invalid_property("onAllTasksComplete", "noaction", "onAllTasksComplete cannot be changed from terminatejob to noaction.")
            if "constraints" in body and body["constraints"] is not None:
                check_duration("constraints.maxWallClockTime", body["constraints"].get("maxWallClockTime"))
            for key in ("priority", "maxParallelTasks", "constraints", "poolInfo", "onAllTasksComplete", "onTaskFailure", "metadata", "allowTaskPreemption"):
                if key in body and body[key] is not None:
                    job[key] = body[key]
                elif replace and key in ("metadata", "constraints"):
                    job.pop(key, None)
            self._touch(job)
            self.store.save_job(job)
            self.wake()
            return job

    def terminate_job(self, job_id: str, reason: str | None) -> None:
        with self.lock:
            job = self._job(job_id)
            if job["state"] == "completed":
                raise BatchServiceError(409, "JobCompleted", "The specified job is already in a completed state.")
            self._terminate_job(job, reason or "UserTerminate")

    def _terminate_job(self, job: dict, reason: str) -> None:
        """Job_Terminate: running tasks are ended; active tasks stay active and are never scheduled.

        ``terminate_job`` in azure/batch/_operations/_operations.py: "If there are any Tasks in the
        Job in the active state, they will remain in the active state. Once a Job is terminated, new
        Tasks cannot be added and any remaining active Tasks will not be scheduled."
        """
        job["state"], job["stateTransitionTime"] = "terminating", now_iso()
        for task in list(self.tasks[job["id"]].values()):
            if task["state"] in ("running", "preparing"):
                self._end_task(job["id"], task, "The task was ended because its job was terminated.")
        self.queue[job["id"]].clear()
        job["previousState"], job["previousStateTransitionTime"] = "active", job["stateTransitionTime"]
        job["state"], job["stateTransitionTime"] = "completed", now_iso()
        job.setdefault("executionInfo", {}).update(endTime=now_iso(), terminateReason=reason)
        self._touch(job)
        self.store.save_job(job)

    def delete_job(self, job_id: str) -> None:
        with self.lock:
            job = self._job(job_id)
            job["state"] = "deleting"
            for task in list(self.tasks[job_id].values()):
                self._kill_task(job_id, task, "deleted")
            for key in [k for k in self.procs if k[0] == "task" and k[1] == job_id]:
                self.procs[key].kill_reason = "deleted"
            del self.jobs[job_id], self.tasks[job_id], self.queue[job_id], self.counters[job_id], self.task_keys[job_id]
            self.store.delete_job(job_id)

    def task_counts(self, job_id: str) -> dict:
        with self.lock:
            self._job(job_id)
            counters = self.counters[job_id]
            names = ("active", "running", "completed", "succeeded", "failed")
            return {
                "taskCounts": {n: counters.tasks[n] for n in names},
                "taskSlotCounts": {n: counters.slots[n] for n in names},
            }

    def _complete_jobs(self) -> None:
        for job in list(self.jobs.values()):
            if job["state"] != "active":
                continue
            limit = parse_duration(job.get("constraints", {}).get("maxWallClockTime"))
            if limit is not None and elapsed_since(job["creationTime"]) > limit:
                self._terminate_job(job, "MaxWallClockTimeExpiry")
                continue
            if job.get("onAllTasksComplete") == "terminatejob":
                counters = self.counters[job["id"]].tasks
                if counters["active"] == 0 and counters["running"] == 0:
                    self._terminate_job(job, "AllTasksComplete")
