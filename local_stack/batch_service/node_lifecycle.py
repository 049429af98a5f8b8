"""Nodes of a pool: added and removed by resizes, booted (image prefetch, start task), preempted and recovered.

A node's ``_boot`` number counts its boots: a start task whose boot is no longer current
(the node was preempted, rebooted or removed meanwhile) records nothing.
"""
from __future__ import annotations

import hashlib
import threading
import time

from local_stack.batch_service import node_ops, registry, supported, task_process
from local_stack.batch_service.account_state import AccountState
from local_stack.batch_service.errors import BatchServiceError, not_found
from local_stack.batch_service.formats import now_iso


class NodeLifecycle(AccountState):
    """Node operations of the HTTP layer, and what happens to a node and its running tasks."""

    def list_nodes(self, pool_id: str) -> list[dict]:
        with self.lock:
            self._pool(pool_id)
            return list(self.nodes[pool_id].values())

    def get_node(self, pool_id: str, node_id: str) -> dict:
        with self.lock:
            self._pool(pool_id)
            node = self.nodes[pool_id].get(node_id)
            if node is None:
                raise not_found("Node", node_id)
            return node

    def _add_node(self, pool: dict, dedicated: bool) -> None:
        pool["_nodeSeq"] = pool.get("_nodeSeq", 0) + 1
        suffix = "d" if dedicated else "p"
        pool_hash = hashlib.sha256(pool["id"].encode()).hexdigest()[:16]
        node_id = f"tvmps_{pool_hash}{pool['_nodeSeq']:06d}_{suffix}"
        now = now_iso()
        node_dir = self._node_dir(pool["id"], node_id)
        for sub in ("shared", "startup", "workitems"):
            (node_dir / sub).mkdir(parents=True, exist_ok=True)
        node = {
            "id": node_id,
            "url": self._url("pools", pool["id"], "nodes", node_id),
            "state": "starting",
            "schedulingState": "enabled",
            "stateTransitionTime": now,
            "allocationTime": now,
            "lastBootTime": now,
            "ipAddress": "127.0.0.1",
            "affinityId": f"TVM:{node_id}",
            "vmSize": pool["vmSize"],
            "totalTasksRun": 0,
            "runningTasksCount": 0,
            "runningTaskSlotsCount": 0,
            "totalTasksSucceeded": 0,
            "isDedicated": dedicated,
            "nodeAgentInfo": node_ops.agent_info(),
            "_boot": 0,
        }
        self.nodes[pool["id"]][node_id] = node
        self._boot_node(pool, node)
        self.store.save_node(pool["id"], node)

    def _remove_node(self, pool_id: str, node_id: str) -> None:
        self._evict_node_tasks(pool_id, node_id)
        self._stop_start_task(pool_id, node_id)
        self.nodes[pool_id].pop(node_id, None)
        self.store.delete_node(pool_id, node_id)

    def _boot_node(self, pool: dict, node: dict) -> None:
        """Run the pool's start task (if any); with waitForSuccess the node takes no task until it succeeds."""
        node["_boot"] = node.get("_boot", 0) + 1
        start_task = pool.get("startTask")
        node["lastBootTime"] = now_iso()
        if pool.get("mountConfiguration"):
            supported.mount_failed(node)
            return
        node.pop("errors", None)
        container = (pool.get("virtualMachineConfiguration") or {}).get("containerConfiguration") or {}
        for image in container.get("containerImageNames") or []:
            try:
                self.registry.pull(image, container.get("containerRegistries"), pool_identities=[
                    i.get("resourceId", "") for i in (pool.get("identity") or {}).get("userAssignedIdentities") or []])
            except registry.PullError as err:
                # The node could not prefetch the pool's images: it takes no task (and runs no start task).
                node["errors"] = [{"code": err.code, "message": str(err),
                                   "errorDetails": [{"name": k, "value": v} for k, v in err.details.items()]}]
                node.pop("startTaskInfo", None)
                self._set_node_state(node, "unusable")
                return
        if not start_task:
            node.pop("startTaskInfo", None)
            self._set_node_state(node, "idle")
            return
        node["startTask"] = start_task
        wait = start_task.get("waitForSuccess", True)
        self._set_node_state(node, "waitingforstarttask" if wait else "idle")
        node["startTaskInfo"] = {"state": "running", "startTime": now_iso(), "retryCount": 0}
        threading.Thread(
            target=self._run_start_task, args=(pool["id"], node["id"], node["_boot"], dict(start_task)), daemon=True
        ).start()

    def _run_start_task(self, pool_id: str, node_id: str, boot: int, start_task: dict) -> None:
        node_dir = self._node_dir(pool_id, node_id)
        task_dir = node_dir / "startup"
        working_dir = task_dir / "wd"
        working_dir.mkdir(parents=True, exist_ok=True)
        with self.lock:
            node = self.nodes.get(pool_id, {}).get(node_id)
            if node is None or node["_boot"] != boot:
                return
            env = task_process.task_environment(
                self._home(pool_id, node_id, start_task.get("userIdentity"), "start"),
                {**self._batch_vars(pool_id, node_id, node.get("isDedicated", True)),
                 "AZ_BATCH_TASK_DIR": str(task_dir), "AZ_BATCH_TASK_WORKING_DIR": str(working_dir)},
                start_task.get("environmentSettings"),
            )
            runtime = self._runtime(pool_id, start_task.get("containerSettings"))
        max_retries = start_task.get("maxTaskRetryCount") or 0
        retry = 0
        while True:
            exit_code, failure = self._execute(
                ("start", pool_id, node_id), boot, start_task, task_dir, working_dir, env, None, runtime
            )
            if exit_code is None and failure is None:
                return  # killed because the node went away
            if (failure or exit_code) and (max_retries == -1 or retry < max_retries):
                retry += 1
                continue
            break
        with self.lock:
            node = self.nodes.get(pool_id, {}).get(node_id)
            if self._stop.is_set() or node is None or node["_boot"] != boot:
                return
            info = node["startTaskInfo"]
            info.update(state="completed", endTime=now_iso(), retryCount=retry)
            if exit_code is not None:
                info["exitCode"] = exit_code
            if failure is None and exit_code:
                failure = {"category": "usererror", "code": "FailureExitCode", "message": "The task exited with an exit code representing a failure"}
            info["result"] = "failure" if failure else "success"
            if failure:
                info["failureInfo"] = failure
            if start_task.get("waitForSuccess", True):
                self._set_node_state(node, "starttaskfailed" if failure else "idle")
            self.store.save_node(pool_id, node)
            self.wake()

    def _stop_start_task(self, pool_id: str, node_id: str) -> None:
        running = self.procs.get(("start", pool_id, node_id))
        if running:
            running.kill_reason = "node-removed"
            task_process.kill(running.proc)

    def _evict_node_tasks(self, pool_id: str, node_id: str) -> list[str]:
        """Kill every task running on the node and put it back in its job's queue (requeueCount + 1)."""
        evicted = []
        for key, running in list(self.procs.items()):
            if key[0] != "task":
                continue
            _, job_id, task_id = key
            task = self.tasks.get(job_id, {}).get(task_id)
            info = (task or {}).get("nodeInfo") or {}
            if info.get("nodeId") != node_id or info.get("poolId") != pool_id:
                continue
            running.kill_reason = "preempted"
            task_process.kill(running.proc)
        for job_id, tasks in self.tasks.items():
            for task in tasks.values():
                if task["state"] in ("running", "preparing") and (task.get("nodeInfo") or {}).get("nodeId") == node_id \
                        and (task.get("nodeInfo") or {}).get("poolId") == pool_id:
                    self._release_slot(task)
                    self._requeue(job_id, task, count=True)
                    evicted.append(task["id"])
        return evicted

    def preempt(self, pool_id: str, node_id: str | None) -> dict:
        """A spot eviction: the node's running tasks are killed and requeued; the node comes back later."""
        with self.lock:
            self._pool(pool_id)
            nodes = self.nodes[pool_id]
            if node_id is None:
                busy = sorted(nodes.values(), key=lambda n: -n["runningTasksCount"])
                if not busy:
                    raise BatchServiceError(409, "NoNodeToPreempt", f"Pool {pool_id} has no node.")
                node_id = busy[0]["id"]
            node = nodes.get(node_id)
            if node is None:
                raise not_found("Node", node_id)
            evicted = self._evict_node_tasks(pool_id, node_id)
            self._stop_start_task(pool_id, node_id)
            node["_boot"] = node.get("_boot", 0) + 1
            self._set_node_state(node, "preempted")
            node["_recoverAt"] = time.time() + self.config.preempted_node_recovery
            self.store.save_node(pool_id, node)
            self.wake()
            return {"poolId": pool_id, "nodeId": node_id, "requeuedTasks": evicted}

    def _recover_preempted_nodes(self) -> None:
        for pool_id, nodes in self.nodes.items():
            for node in nodes.values():
                if node["state"] == "preempted" and time.time() >= node.get("_recoverAt", 0):
                    node.pop("_recoverAt", None)
                    self._boot_node(self.pools[pool_id], node)
                    self.store.save_node(pool_id, node)
