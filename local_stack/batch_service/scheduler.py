"""The scheduler thread: each tick allocates nodes, recovers preempted ones, enforces wall clocks,
hands queued tasks to free task slots and completes jobs; each running task is a worker thread.

Also the engine's start and stop, and its restart: saved state is reloaded and tasks that were
running when the service died are requeued.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from local_stack.batch_service import autopool, blobfiles, dependencies, job_ops, job_prep, supported, task_process
from local_stack.batch_service.account_state import AccountState, JobCounters
from local_stack.batch_service.formats import now_iso, parse_duration

USABLE_NODE_STATES = ("idle", "running")


class Scheduler(AccountState):
    """Start, stop, reload; the tick; dispatching tasks and recording their results."""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="batch-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling and kill every process we started (their tasks requeue on the next start).

        Once stopping, no worker records a result or saves anything: whatever ran is rerun after a restart.
        """
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)
        with self.lock:
            for running in list(self.procs.values()):
                running.kill_reason = "shutdown"
                task_process.kill(running.proc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.tick_seconds)
            self._wake.clear()
            try:
                self.tick()
            except Exception:  # keep scheduling; the error is visible in the service log
                import traceback

                traceback.print_exc()

    def tick(self) -> None:
        with self.lock:
            self._allocate_nodes()
            self._recover_preempted_nodes()
            self._enforce_wall_clock()
            self._dispatch()
            self._complete_jobs()
            job_prep.release_completed_jobs(self)
            autopool.reap(self)

    def _load(self) -> None:
        """Reload saved state; tasks that were running when the service died are requeued."""
        pools, nodes, jobs, tasks = self.store.load()
        for pool in pools:
            self.pools[pool["id"]] = pool
            self.nodes[pool["id"]] = {}
        for pool_id, node in nodes:
            if pool_id in self.nodes:
                self.nodes[pool_id][node["id"]] = node
        for job in jobs:
            self.jobs[job["id"]] = job
            self.tasks[job["id"]] = {}
            self.task_keys[job["id"]] = {}
            self.queue[job["id"]] = {}
            self.counters[job["id"]] = JobCounters()
        for job_id, task in tasks:
            if job_id not in self.tasks:
                continue
            self._seq = max(self._seq, task.get("_seq", 0))
            self.tasks[job_id][task["id"]] = task
            self.task_keys[job_id][task["id"].lower()] = task["id"]
            if task["state"] in ("running", "preparing"):
                if task.get("_pid"):
                    task_process.kill_leftover(task["_pid"], [f"AZ_BATCH_JOB_ID={job_id}", f"AZ_BATCH_TASK_ID={task['id']}"])
                info = task.setdefault("executionInfo", {})
                info["requeueCount"] = info.get("requeueCount", 0) + 1
                info["lastRequeueTime"] = now_iso()
                task.pop("_pid", None)
                task["_attempt"] = task.get("_attempt", 0) + 1
                task["previousState"], task["previousStateTransitionTime"] = task["state"], task.get("stateTransitionTime")
                task["state"], task["stateTransitionTime"] = "active", now_iso()
                self.store.save_tasks(job_id, [task])
            if task["state"] == "active":
                self.queue[job_id][task["id"]] = None
            self._count(job_id, task, +1)
        for pool_id, pool_nodes in self.nodes.items():
            for node in pool_nodes.values():
                node.update(runningTasksCount=0, runningTaskSlotsCount=0)
                if node["state"] in ("starting", "waitingforstarttask", "creating"):
                    self._boot_node(self.pools[pool_id], node)
                elif node["state"] == "running":
                    self._set_node_state(node, "idle")
                self.store.save_node(pool_id, node)

    # ------------------------------------------------------------------ scheduling
    def _dispatch(self) -> None:
        """Give queued tasks of active jobs the free task slots of their pool's usable nodes."""
        jobs = sorted((j for j in self.jobs.values() if j["state"] == "active" and self.queue[j["id"]]),
                      key=lambda j: (-j.get("priority", 0), j["creationTime"]))
        for job in jobs:
            pool = self.pools.get(self._pool_key(autopool.pool_id(job)) or "")
            if pool is None or pool["state"] != "active":
                continue
            slots_per_node = pool["taskSlotsPerNode"]
            pack = str((pool.get("taskSchedulingPolicy") or {}).get("nodeFillType") or "").lower() == "pack"
            max_parallel = job.get("maxParallelTasks", -1)
            running = self.counters[job["id"]].tasks["running"]
            for task_id in list(self.queue[job["id"]]):
                if max_parallel not in (None, -1) and running >= max_parallel:
                    break
                nodes = [n for n in self.nodes[pool["id"]].values()
                         if n["state"] in USABLE_NODE_STATES and n.get("schedulingState") == "enabled"]
                if not nodes:
                    break
                task = self.tasks[job["id"]][task_id]
                if not dependencies.satisfied(self.tasks[job["id"]], task):
                    continue  # kept waiting, as Azure does, until the tasks it depends on complete
                refusal = supported.run_refusal(task)
                if refusal is not None:
                    supported.fail_without_running(self, job["id"], task, refusal)
                    continue
                need = task.get("requiredSlots") or 1
                fits = [n for n in nodes if slots_per_node - n["runningTaskSlotsCount"] >= need]
                if not fits:
                    if all(n["runningTaskSlotsCount"] >= slots_per_node for n in nodes):
                        break
                    continue
                node = fits[0] if pack else min(fits, key=lambda n: (n["runningTaskSlotsCount"], n["id"]))
                if not job_prep.ready(self, job, pool, node):
                    continue  # the job preparation task runs (or failed) on that node first
                self._start_task(job, pool, node, task)
                running += 1

    def _start_task(self, job: dict, pool: dict, node: dict, task: dict) -> None:
        job_id = job["id"]
        del self.queue[job_id][task["id"]]
        task["_attempt"] = task.get("_attempt", 0) + 1
        node_dir = self._node_dir(pool["id"], node["id"])
        task_dir = node_dir / "workitems" / job_id / "job-1" / task["id"]
        task["nodeInfo"] = {
            "affinityId": node["affinityId"],
            "nodeUrl": node["url"],
            "poolId": pool["id"],
            "nodeId": node["id"],
            "taskRootDirectory": str(task_dir),
            "taskRootDirectoryUrl": task["url"] + "/files",
        }
        info = task.setdefault("executionInfo", {})
        info["startTime"] = now_iso()
        for key in ("endTime", "exitCode", "result", "failureInfo"):
            info.pop(key, None)
        self._set_task_state(job_id, task, "running")
        node["runningTasksCount"] += 1
        node["runningTaskSlotsCount"] += task.get("requiredSlots") or 1
        node["totalTasksRun"] += 1
        self._set_node_state(node, "running")
        env = task_process.task_environment(
            self._home(pool["id"], node["id"], task.get("userIdentity"), f"{job_id}-{task['id']}"),
            {**self._batch_vars(pool["id"], node["id"], node.get("isDedicated", True)),
             "AZ_BATCH_JOB_ID": job_id,
             "AZ_BATCH_TASK_ID": task["id"],
             "AZ_BATCH_TASK_DIR": str(task_dir),
             "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd")},
            job.get("commonEnvironmentSettings"),
            task.get("environmentSettings"),
        )
        self.store.save_tasks(job_id, [task])
        self.store.save_node(pool["id"], node)
        spec = {k: task.get(k) for k in ("commandLine", "resourceFiles", "outputFiles")}
        limit = parse_duration(task["constraints"].get("maxWallClockTime"))
        runtime = self._runtime(pool["id"], task.get("containerSettings"))
        threading.Thread(
            target=self._run_task, args=(job_id, task["id"], task["_attempt"], spec, task_dir, env, limit, runtime),
            daemon=True,
        ).start()

    def _run_task(self, job_id: str, task_id: str, attempt: int, spec: dict, task_dir: Path,
                  env: dict[str, str], limit: float | None, runtime: dict | None = None) -> None:
        exit_code, failure = self._execute(("task", job_id, task_id), attempt, spec, task_dir, task_dir / "wd", env,
                                           limit, runtime)
        if exit_code is None and failure is None:
            return  # preempted, terminated or deleted: whoever stopped it has recorded the outcome
        succeeded = failure is None and exit_code == 0
        upload_error = None
        try:
            blobfiles.upload_output_files(spec.get("outputFiles") or [], task_dir / "wd", succeeded)
        except blobfiles.TransferError as err:
            upload_error = {"category": "usererror", "code": err.code, "message": str(err)}
        with self.lock:
            self._finish_task(job_id, task_id, attempt, exit_code, failure, upload_error)

    def _finish_task(self, job_id: str, task_id: str, attempt: int, exit_code: int | None,
                     failure: dict | None, upload_error: dict | None) -> None:
        task = self.tasks.get(job_id, {}).get(task_id)
        if self._stop.is_set() or task is None or task.get("_attempt") != attempt or task["state"] != "running":
            return
        self._release_slot(task)
        info = task["executionInfo"]
        info["endTime"] = now_iso()
        if exit_code is not None:
            info["exitCode"] = exit_code
        retryable = False
        if failure is None and exit_code:
            failure = {"category": "usererror", "code": "FailureExitCode",
                       "message": "The task exited with an exit code representing a failure"}
            retryable = True
        if failure is None and upload_error:
            failure = upload_error
        task.pop("_pid", None)
        max_retries = task["constraints"].get("maxTaskRetryCount") or 0
        if retryable and (max_retries == -1 or info.get("retryCount", 0) < max_retries):
            info["retryCount"] = info.get("retryCount", 0) + 1
            info["lastRetryTime"] = now_iso()
            info["failureInfo"] = failure
            self._set_task_state(job_id, task, "active")
            self.queue[job_id][task_id] = None
        else:
            info["result"] = "failure" if failure else "success"
            if failure:
                info["failureInfo"] = failure
            self._set_task_state(job_id, task, "completed")
            node = self.nodes.get(task["nodeInfo"]["poolId"], {}).get(task["nodeInfo"]["nodeId"])
            if node is not None and not failure:
                node["totalTasksSucceeded"] += 1
            if failure:
                self._apply_exit_conditions(job_id, task, exit_code)
        self.store.save_tasks(job_id, [task])
        self.wake()

    def _apply_exit_conditions(self, job_id: str, task: dict, exit_code: int | None) -> None:
        """onTaskFailure=performexitoptionsjobaction: a matching exit condition's jobAction terminate ends the job."""
        job = self.jobs.get(job_id)
        if job is None or job.get("onTaskFailure") != "performexitoptionsjobaction":
            return
        conditions = task.get("exitConditions") or {}
        options = conditions.get("default") or {"jobAction": "none"}
        for mapping in conditions.get("exitCodes") or []:
            if mapping.get("code") == exit_code:
                options = mapping.get("exitOptions") or options
        for rng in conditions.get("exitCodeRanges") or []:
            if exit_code is not None and rng["start"] <= exit_code <= rng["end"]:
                options = rng.get("exitOptions") or options
        if options.get("jobAction") == "terminate" and job["state"] == "active":
            self._terminate_job(job, "TaskFailed")
        elif options.get("jobAction") == "disable" and job["state"] == "active":
            job_ops.disable(self, job, "requeue")  # "equivalent to ... disableTasks requeue" (BatchJobActionKind)

    def _enforce_wall_clock(self) -> None:
        now = time.monotonic()
        for running in self.procs.values():
            if running.wall_clock_limit is not None and running.kill_reason is None \
                    and now - running.started > running.wall_clock_limit:
                running.kill_reason = "wallclock"
                task_process.kill(running.proc)
