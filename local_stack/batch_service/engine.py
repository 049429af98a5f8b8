"""The Batch account behind the HTTP layer: one Engine, put together from the parts of the service.

Each part is a mixin over the shared state (account_state.py) in its own module:
pool_lifecycle.py (pools, resizes, autoscale), node_lifecycle.py (nodes, start tasks,
preemption), job_lifecycle.py (jobs), task_lifecycle.py (tasks, task files),
process_execution.py (running a process and reading its outcome) and scheduler.py (start,
stop, restart, the tick, dispatch and results). Every attempt carries a number: a result
whose attempt is no longer current (task preempted, terminated, requeued) is ignored.
"""
from __future__ import annotations

from local_stack.batch_service.account_state import EngineConfig
from local_stack.batch_service.account_store import Store
from local_stack.batch_service.faults import Faults
from local_stack.batch_service.job_lifecycle import JobLifecycle
from local_stack.batch_service.node_lifecycle import NodeLifecycle
from local_stack.batch_service.pool_lifecycle import PoolLifecycle
from local_stack.batch_service.process_execution import ProcessExecution
from local_stack.batch_service.scheduler import Scheduler
from local_stack.batch_service.task_lifecycle import TaskLifecycle


class Engine(Scheduler, PoolLifecycle, NodeLifecycle, JobLifecycle, TaskLifecycle, ProcessExecution):
    """The account: every operation the HTTP layer exposes, and the scheduler behind them."""

    def __init__(self, config: EngineConfig, store: Store, faults: Faults) -> None:
        super().__init__(config, store, faults)
        self._load()
