"""Tasks: validate and add (one or a collection), update, terminate, reactivate, delete, requeue; task files.

A task's ``_attempt`` number counts its attempts: killing, ending or requeueing a task starts
a new one, so the result of an attempt that is no longer current is ignored.
"""
from __future__ import annotations

from pathlib import Path

from local_stack.batch_service import blobfiles, dependencies, supported, task_process
from local_stack.batch_service.account_state import MAX_DURATION, AccountState, check_duration, check_id
from local_stack.batch_service.errors import BatchServiceError, exists, invalid_property, missing_property, not_found
from local_stack.batch_service.formats import now_iso


class TaskLifecycle(AccountState):
    """Task operations of the HTTP layer, and the state changes a task goes through."""

    def _validate_task(self, job: dict, body: dict) -> dict:
        task_id = check_id("task", body)
        supported.check_task_body(body)
        dependencies.check_add(job, body)
        if not body.get("commandLine"):
            raise missing_property("commandLine")
        for spec in body.get("resourceFiles") or []:
            sources = [k for k in ("httpUrl", "storageContainerUrl", "autoStorageContainerName") if spec.get(k)]
            if len(sources) != 1:
                raise invalid_property("resourceFiles", sources, "Exactly one of httpUrl, storageContainerUrl and autoStorageContainerName must be set.")
            if spec.get("httpUrl") and not spec.get("filePath"):
                raise missing_property("resourceFiles.filePath")
            if spec.get("filePath") and not blobfiles.safe_relative_path(spec["filePath"]):
                raise invalid_property("resourceFiles.filePath", spec["filePath"], "The file path must be relative and must not contain '..'.")
        for spec in body.get("outputFiles") or []:
            if not spec.get("filePattern"):
                raise missing_property("outputFiles.filePattern")
            if not ((spec.get("destination") or {}).get("container") or {}).get("containerUrl"):
                raise missing_property("outputFiles.destination.container.containerUrl")
            if not spec.get("uploadOptions", {}).get("uploadCondition"):
                raise missing_property("outputFiles.uploadOptions.uploadCondition")
        constraints = dict(body.get("constraints") or {})
        check_duration("constraints.maxWallClockTime", constraints.get("maxWallClockTime"))
        job_constraints = job.get("constraints") or {}
        constraints.setdefault("maxWallClockTime", MAX_DURATION)
        constraints.setdefault("retentionTime", "P7D")
        if constraints.get("maxTaskRetryCount") is None:
            constraints["maxTaskRetryCount"] = job_constraints.get("maxTaskRetryCount") or 0
        slots = body.get("requiredSlots") or 1
        self._seq += 1
        now = now_iso()
        task = {k: v for k, v in body.items() if v is not None}
        task.update(
            id=task_id,
            url=self._url("jobs", job["id"], "tasks", task_id),
            creationTime=now,
            state="active",
            stateTransitionTime=now,
            constraints=constraints,
            requiredSlots=slots,
            executionInfo={"retryCount": 0, "requeueCount": 0},
            _seq=self._seq,
        )
        self._touch(task)
        return task

    def _check_job_open(self, job: dict) -> None:
        if job["state"] == "completed":
            raise BatchServiceError(409, "JobCompleted", "The specified job is already in a completed state.")
        if job["state"] in ("terminating", "deleting"):
            raise BatchServiceError(409, "JobBeingTerminated" if job["state"] == "terminating" else "JobBeingDeleted",
                                    f"The specified job is {job['state']}.")

    def add_task(self, job_id: str, body: dict) -> dict:
        with self.lock:
            job = self._job(job_id)
            self._check_job_open(job)
            if str(body.get("id") or "").lower() in self.task_keys[job_id]:
                raise exists("Task")
            task = self._validate_task(job, body)
            self._insert_tasks(job_id, [task])
            return task

    def add_task_collection(self, job_id: str, bodies: list[dict]) -> list[dict]:
        """Per-task results: Success, or clienterror with TaskExists / validation codes."""
        with self.lock:
            job = self._job(job_id)
            self._check_job_open(job)
            results, added, seen = [], [], set()
            for body in bodies:
                task_id = body.get("id") if isinstance(body, dict) else None
                try:
                    if not isinstance(body, dict):
                        raise invalid_property("value", body, "Each task must be a JSON object.")
                    if str(task_id or "").lower() in self.task_keys[job_id] or str(task_id or "").lower() in seen:
                        raise exists("Task")
                    task = self._validate_task(job, body)
                except BatchServiceError as err:
                    results.append({"status": "clienterror", "taskId": task_id, "error": err.body()})
                    continue
                seen.add(task_id.lower())
                added.append(task)
                # "Success" as real Batch writes it (recorded: azure-sdk-assets, .NET AddTaskCollection.json)
                results.append({"status": "Success", "taskId": task_id, "eTag": task["eTag"],
                                "lastModified": task["lastModified"], "location": task["url"]})
            self._insert_tasks(job_id, added)
            return results

    def _insert_tasks(self, job_id: str, tasks: list[dict]) -> None:
        for task in tasks:
            self.tasks[job_id][task["id"]] = task
            self.task_keys[job_id][task["id"].lower()] = task["id"]
            self.queue[job_id][task["id"]] = None
            self._count(job_id, task, +1)
        if tasks:
            self.store.save_tasks(job_id, tasks)
            self.wake()

    def get_task(self, job_id: str, task_id: str) -> dict:
        with self.lock:
            return self._task(job_id, task_id)

    def list_tasks(self, job_id: str) -> list[dict]:
        with self.lock:
            self._job(job_id)
            return list(self.tasks[job_id].values())

    def update_task(self, job_id: str, task_id: str, body: dict) -> dict:
        with self.lock:
            task = self._task(job_id, task_id)
            if body.get("constraints"):
                check_duration("constraints.maxWallClockTime", body["constraints"].get("maxWallClockTime"))
                task["constraints"].update({k: v for k, v in body["constraints"].items() if v is not None})
            self._touch(task)
            self.store.save_tasks(job_id, [task])
            return task

    def terminate_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            task = self._task(job_id, task_id)
            if task["state"] == "completed":
                raise BatchServiceError(409, "TaskCompleted", "The specified task is already completed.")
            self._end_task(job_id, task, "The task was terminated by a user request.")

    def reactivate_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            task = self._task(job_id, task_id)
            if task["state"] != "completed" or (task.get("executionInfo") or {}).get("result") != "failure":
                raise BatchServiceError(409, "OperationInvalidForCurrentState", "Only a completed task that failed can be reactivated.")
            self._check_job_open(self._job(job_id))
            # still counted as failed until the state changes below (no result = not succeeded)
            task["executionInfo"] = {"retryCount": 0, "requeueCount": task["executionInfo"].get("requeueCount", 0)}
            self._set_task_state(job_id, task, "active")
            self.queue[job_id][task_id] = None
            self.store.save_tasks(job_id, [task])
            self.wake()

    def delete_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            task = self._task(job_id, task_id)
            self._kill_task(job_id, task, "deleted")
            self._count(job_id, task, -1)
            del self.tasks[job_id][task_id]
            self.task_keys[job_id].pop(task_id.lower(), None)
            self.queue[job_id].pop(task_id, None)
            self.store.delete_task(job_id, task_id)

    def _kill_task(self, job_id: str, task: dict, reason: str) -> None:
        """Stop the task's process (if any) and invalidate its current attempt."""
        running = self.procs.get(("task", job_id, task["id"]))
        if running:
            running.kill_reason = reason
            task_process.kill(running.proc)
        if task["state"] in ("running", "preparing"):
            self._release_slot(task)
        task["_attempt"] = task.get("_attempt", 0) + 1

    def _end_task(self, job_id: str, task: dict, message: str) -> None:
        """Complete a task that did not finish on its own (terminated task or job)."""
        self._kill_task(job_id, task, "terminated")
        self.queue[job_id].pop(task["id"], None)
        info = task.setdefault("executionInfo", {})
        info["endTime"] = now_iso()
        info["result"] = "failure"
        info["failureInfo"] = {"category": "usererror", "code": "TaskEnded", "message": message}
        self._set_task_state(job_id, task, "completed")
        self.store.save_tasks(job_id, [task])

    def _requeue(self, job_id: str, task: dict, count: bool, save: bool = True) -> None:
        info = task.setdefault("executionInfo", {})
        if count:
            info["requeueCount"] = info.get("requeueCount", 0) + 1
            info["lastRequeueTime"] = now_iso()
        task["_attempt"] = task.get("_attempt", 0) + 1
        task.pop("_pid", None)
        if task["state"] != "active":
            self._set_task_state(job_id, task, "active")
        self.queue[job_id] = {task["id"]: None, **self.queue[job_id]}
        if save:
            self.store.save_tasks(job_id, [task])

    def _release_slot(self, task: dict) -> None:
        info = task.get("nodeInfo") or {}
        node = self.nodes.get(info.get("poolId"), {}).get(info.get("nodeId"))
        if node is None:
            return
        node["runningTasksCount"] = max(0, node["runningTasksCount"] - 1)
        node["runningTaskSlotsCount"] = max(0, node["runningTaskSlotsCount"] - (task.get("requiredSlots") or 1))
        if node["state"] == "running" and node["runningTasksCount"] == 0:
            self._set_node_state(node, "idle")
        self.store.save_node(info["poolId"], node)

    # ------------------------------------------------------------------ task files
    def task_file(self, job_id: str, task_id: str, file_path: str) -> Path:
        with self.lock:
            task = self._task(job_id, task_id)
            task_dir = self._task_dir(task)
        if task_dir is None or not blobfiles.safe_relative_path(file_path):
            raise not_found("File", file_path)
        path = task_dir / file_path
        if not path.exists():
            raise not_found("File", file_path)
        return path
