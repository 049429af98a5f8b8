"""Pools: create, update, resize (with its delays, faults and stop), autoscale, remove nodes, delete.

A resize sets the pool's targets and a time; the scheduler's tick (`_allocate_nodes`) adds or
removes nodes once that time has passed, and a stop-resize settles the pool at the nodes it has.
"""
from __future__ import annotations

import shutil
import time

from local_stack.batch_service import autoscale, supported
from local_stack.batch_service.account_state import AccountState, check_duration, check_id
from local_stack.batch_service.errors import BatchServiceError, exists, invalid_property, missing_property, not_found
from local_stack.batch_service.formats import now_iso


def _check_container_configuration(vm_config: dict) -> None:
    """containerConfiguration needs a known type; registries need a login (user and password, or an identity)."""
    container = vm_config.get("containerConfiguration")
    if container is None:
        return
    if not container.get("type"):
        raise missing_property("virtualMachineConfiguration.containerConfiguration.type")
    if str(container["type"]).lower() not in ("dockercompatible", "cricompatible"):
        raise invalid_property("virtualMachineConfiguration.containerConfiguration.type", container["type"],
                               "Known values are dockerCompatible and criCompatible.")
    for reg in container.get("containerRegistries") or []:
        if not reg.get("identityReference") and not (reg.get("username") and reg.get("password")):
            raise invalid_property("containerRegistries", reg.get("registryServer"),
                                   "A container registry needs username and password, or an identityReference.")


class PoolLifecycle(AccountState):
    """Pool operations of the HTTP layer, and resizing pools to their targets."""

    def create_pool(self, body: dict, auto: bool = False) -> dict:
        with self.lock:
            pool_id = check_id("pool", body)
            supported.check_pool(body)
            if self._pool_key(pool_id):
                raise exists("Pool")
            if not body.get("vmSize"):
                raise missing_property("vmSize")
            slots = body.get("taskSlotsPerNode") or 1
            if not isinstance(slots, int) or slots < 1:
                raise invalid_property("taskSlotsPerNode", slots, "taskSlotsPerNode must be at least 1.")
            _check_container_configuration(body.get("virtualMachineConfiguration") or {})
            now = now_iso()
            pool = {
                "id": pool_id,
                "displayName": body.get("displayName"),
                "url": self._url("pools", pool_id),
                "creationTime": now,
                "state": "active",
                "stateTransitionTime": now,
                "allocationState": "steady",
                "allocationStateTransitionTime": now,
                "vmSize": str(body["vmSize"]).lower(),  # as real Batch answers it (recorded: AddTaskCollection.json)
                "virtualMachineConfiguration": body.get("virtualMachineConfiguration"),
                "resizeTimeout": body.get("resizeTimeout") or "PT15M",
                "currentDedicatedNodes": 0,
                "currentLowPriorityNodes": 0,
                "targetDedicatedNodes": 0,
                "targetLowPriorityNodes": 0,
                "enableAutoScale": bool(body.get("enableAutoScale")),
                "enableInterNodeCommunication": bool(body.get("enableInterNodeCommunication")),
                "startTask": body.get("startTask"),
                "taskSlotsPerNode": slots,
                # The default as real Batch writes it (recorded: "Spread", "none"); a given policy is echoed.
                "taskSchedulingPolicy": body.get("taskSchedulingPolicy") or {"nodeFillType": "Spread", "jobDefaultOrder": "none"},
                "userAccounts": body.get("userAccounts"),
                "metadata": body.get("metadata"),
                "mountConfiguration": body.get("mountConfiguration"),
                "resourceTags": body.get("resourceTags"),
                "targetNodeCommunicationMode": body.get("targetNodeCommunicationMode"),
                "_nodeSeq": 0,
                "_autoPool": auto or None,
            }
            if pool["enableAutoScale"]:
                if body.get("targetDedicatedNodes") is not None or body.get("targetLowPriorityNodes") is not None:
                    raise invalid_property("targetDedicatedNodes", body.get("targetDedicatedNodes"), "Target node counts must not be set when enableAutoScale is true.")
                self._apply_formula(pool, body.get("autoScaleFormula") or "", body.get("autoScaleEvaluationInterval"))
            else:
                self._set_targets(pool, body.get("targetDedicatedNodes") or 0, body.get("targetLowPriorityNodes") or 0)
            pool = {k: v for k, v in pool.items() if v is not None}
            self._touch(pool)
            self.pools[pool_id] = pool
            self.nodes[pool_id] = {}
            self.store.save_pool(pool)
            self.wake()
            return pool

    def _set_targets(self, pool: dict, dedicated: int, low_priority: int) -> None:
        for name, value in (("targetDedicatedNodes", dedicated), ("targetLowPriorityNodes", low_priority)):
            if not isinstance(value, int) or value < 0:
                raise invalid_property(name, value, "Node counts must be non-negative integers.")
        pool["targetDedicatedNodes"], pool["targetLowPriorityNodes"] = dedicated, low_priority
        pool["allocationState"], pool["allocationStateTransitionTime"] = "resizing", now_iso()
        pool.pop("resizeErrors", None)  # they describe the last resize only
        current = self.nodes.get(pool["id"], {}).values()
        have_dedicated = sum(1 for n in current if n.get("isDedicated"))
        have_spot = sum(1 for n in current if not n.get("isDedicated"))
        delay = 0.0
        if dedicated > have_dedicated or low_priority > have_spot:
            delay = max(delay, self._timing("allocation"))
        if dedicated < have_dedicated or low_priority < have_spot:
            delay = max(delay, self._timing("removal"))
        pool["_allocateAt"] = time.time() + delay

    def _timing(self, which: str) -> float:
        """Seconds a resize step takes: set at run time by a pool_timing fault, else the service option."""
        value = getattr(self.faults.timing, which)
        if value is not None:
            return value
        return {"allocation": self.config.node_allocation_delay, "removal": self.config.node_removal_delay,
                "stop": self.config.stop_resize_delay}[which]

    def _apply_formula(self, pool: dict, formula: str, interval: str | None) -> None:
        values = autoscale.evaluate(formula)
        check_duration("autoScaleEvaluationInterval", interval)
        pool["autoScaleFormula"] = formula
        pool["autoScaleEvaluationInterval"] = interval or "PT15M"
        pool["autoScaleRun"] = {"timestamp": now_iso(), "results": autoscale.results_text(values)}
        self._set_targets(pool, int(values["TargetDedicatedNodes"]), int(values["TargetLowPriorityNodes"]))

    def get_pool(self, pool_id: str) -> dict:
        with self.lock:
            return self._pool(pool_id)

    def list_pools(self) -> list[dict]:
        with self.lock:
            return list(self.pools.values())

    def update_pool(self, pool_id: str, body: dict, replace: bool = False) -> dict:
        """PATCH (merge) or updateproperties (replace startTask, metadata, ...)."""
        with self.lock:
            pool = self._pool(pool_id)
            if pool["state"] == "deleting":
                raise BatchServiceError(409, "PoolBeingDeleted", "The specified pool has been marked for deletion and is being reclaimed.")
            supported.check_pool_update(body)
            for key in ("startTask", "metadata", "applicationPackageReferences", "displayName", "taskSchedulingPolicy"):
                if key in body or replace:
                    if body.get(key) is None:
                        pool.pop(key, None)
                    else:
                        pool[key] = body[key]
            self._touch(pool)
            self.store.save_pool(pool)
            return pool

    def resize_pool(self, pool_id: str, body: dict) -> None:
        with self.lock:
            pool = self._pool(pool_id)
            if pool.get("enableAutoScale"):
                raise BatchServiceError(409, "OperationInvalidForCurrentState", "The pool has auto scaling enabled; disable it before resizing.")
            if pool["allocationState"] != "steady":
                raise BatchServiceError(409, "PoolBeingResized", "The pool is being resized; wait until its allocation state is steady.")
            self._set_targets(pool, body.get("targetDedicatedNodes") or 0, body.get("targetLowPriorityNodes") or 0)
            self._touch(pool)
            self.store.save_pool(pool)
            self.wake()

    def stop_resize(self, pool_id: str) -> None:
        """Pool_StopResize: ``stopping``, then ``steady`` at the nodes it has, targets kept, error ResizeStopped.

        ``stop_pool_resize`` in azure/batch/_operations/_operations.py: the pool "stabilizes at the
        number of Compute Nodes it was at when the stop operation was done ... the Pool allocation state
        changes first to stopping and then to steady". A steady pool: nothing to stop (no change).
        """
        with self.lock:
            pool = self._pool(pool_id)
            if pool["allocationState"] != "resizing":
                return
            pool["allocationState"], pool["allocationStateTransitionTime"] = "stopping", now_iso()
            pool.pop("_allocateAt", None)
            pool["_stopAt"] = time.time() + self._timing("stop")
            self._touch(pool)
            self.store.save_pool(pool)
            self.wake()

    def enable_autoscale(self, pool_id: str, body: dict) -> dict:
        with self.lock:
            pool = self._pool(pool_id)
            formula = body.get("autoScaleFormula") or pool.get("autoScaleFormula") or ""
            self._apply_formula(pool, formula, body.get("autoScaleEvaluationInterval") or pool.get("autoScaleEvaluationInterval"))
            pool["enableAutoScale"] = True
            self._touch(pool)
            self.store.save_pool(pool)
            self.wake()
            return pool

    def disable_autoscale(self, pool_id: str) -> dict:
        with self.lock:
            pool = self._pool(pool_id)
            pool["enableAutoScale"] = False
            for key in ("autoScaleFormula", "autoScaleEvaluationInterval", "autoScaleRun"):
                pool.pop(key, None)
            self._touch(pool)
            self.store.save_pool(pool)
            return pool

    def evaluate_autoscale(self, pool_id: str, body: dict) -> dict:
        with self.lock:
            pool = self._pool(pool_id)
            if not pool.get("enableAutoScale"):
                raise BatchServiceError(409, "OperationInvalidForCurrentState", "The pool does not have auto scaling enabled.")
            values = autoscale.evaluate(body.get("autoScaleFormula") or "")
            return {"timestamp": now_iso(), "results": autoscale.results_text(values)}

    def delete_pool(self, pool_id: str) -> None:
        """Delete now: tasks running on its nodes are requeued, its nodes disappear."""
        with self.lock:
            pool = self._pool(pool_id)
            pool["state"] = "deleting"
            for node in list(self.nodes.get(pool_id, {}).values()):
                self._evict_node_tasks(pool_id, node["id"])
                self._stop_start_task(pool_id, node["id"])
            del self.pools[pool_id]
            self.nodes.pop(pool_id, None)
            self.store.delete_pool(pool_id)
            shutil.rmtree(self.config.state_dir / "nodes" / pool_id, ignore_errors=True)

    def remove_nodes(self, pool_id: str, body: dict) -> None:
        with self.lock:
            pool = self._pool(pool_id)
            for node_id in body.get("nodeList") or []:
                node = self.nodes[pool_id].get(node_id)
                if node is None:
                    raise not_found("Node", node_id)
            for node_id in body.get("nodeList") or []:
                node = self.nodes[pool_id][node_id]
                key = "targetDedicatedNodes" if node.get("isDedicated") else "targetLowPriorityNodes"
                pool[key] = max(0, pool[key] - 1)
                self._remove_node(pool_id, node_id)
            self._refresh_counts(pool)
            self._touch(pool)
            self.store.save_pool(pool)

    def _refresh_counts(self, pool: dict) -> None:
        nodes = self.nodes[pool["id"]].values()
        pool["currentDedicatedNodes"] = sum(1 for n in nodes if n.get("isDedicated"))
        pool["currentLowPriorityNodes"] = sum(1 for n in nodes if not n.get("isDedicated"))

    def _allocate_nodes(self) -> None:
        """Bring resizing pools to their targets once the resize time has passed; settle stopping pools.

        A resize_error fault ends a growing resize short of its targets, steady with ``resizeErrors``
        (they are "returned only when the pool's allocation state is steady": CloudPool.ResizeErrors).
        """
        for pool in list(self.pools.values()):
            if pool["allocationState"] == "stopping" and time.time() >= pool.get("_stopAt", 0):
                pool.pop("_stopAt", None)
                pool["resizeErrors"] = [{"code": "ResizeStopped", "message": "The user stopped the resize operation."}]
                pool["allocationState"], pool["allocationStateTransitionTime"] = "steady", now_iso()
                self._touch(pool)
                self.store.save_pool(pool)
                continue
            if pool["allocationState"] != "resizing" or time.time() < pool.get("_allocateAt", 0):
                continue
            pool_nodes = self.nodes[pool["id"]]
            growing = any(
                target > sum(1 for n in pool_nodes.values() if bool(n.get("isDedicated")) == dedicated)
                for dedicated, target in ((True, pool["targetDedicatedNodes"]), (False, pool["targetLowPriorityNodes"]))
            )
            fault = self.faults.take_resize(pool["id"]) if growing else None
            room = fault.allocate if fault else None
            for dedicated, target in ((True, pool["targetDedicatedNodes"]), (False, pool["targetLowPriorityNodes"])):
                current = [n for n in pool_nodes.values() if bool(n.get("isDedicated")) == dedicated]
                for _ in range(target - len(current)):
                    if room is not None:
                        if room == 0:
                            break
                        room -= 1
                    self._add_node(pool, dedicated)
                surplus = len(current) - target
                if surplus > 0:
                    victims = sorted(current, key=lambda n: (n["runningTasksCount"], n["state"] != "idle"))[:surplus]
                    for node in victims:
                        self._remove_node(pool["id"], node["id"])
            self._refresh_counts(pool)
            if fault:
                pool["resizeErrors"] = [{"code": fault.code, "message": fault.message}]
            pool["allocationState"], pool["allocationStateTransitionTime"] = "steady", now_iso()
            pool.pop("_allocateAt", None)
            self._touch(pool)
            self.store.save_pool(pool)
