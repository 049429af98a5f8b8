"""What every operator and sensor of this package shares: its hook, and how it waits.

``AzureComputeBase`` is a mixin for ``BaseOperator``/``BaseSensorOperator`` subclasses, generic
over the hook class (like the Amazon provider's ``AwsBaseOperator``): a class names
``hook_class`` and the attribute holding its connection id, and gets one cached ``hook``.
``wait_for`` is the one wait: check once with the trigger's own ``poll_once`` (a finished
wait needs no trigger), then defer (``deferrable``, default from the Airflow setting
``operators.default_deferrable``) or run the same trigger here; either way the named method
receives the trigger's event, so both modes decide alike.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from airflow.sdk import conf

if TYPE_CHECKING:
    from airflow.sdk import Context

    from azure_compute.triggers.base import AzurePollingTrigger

HookT = TypeVar("HookT")

#: Whether operators and sensors wait in the triggerer unless told otherwise.
DEFAULT_DEFERRABLE: bool = conf.getboolean("operators", "default_deferrable", fallback=False)

#: Seconds Airflow's defer timeout is given beyond the trigger's own deadline, so that the
#: trigger's timeout event (which says what it last saw) arrives before Airflow's bare one.
#: One home for the margins the operators used before (they differ only in how long a poll takes).
DEFER_MARGIN_BATCH_OPERATOR = 60
DEFER_MARGIN_BATCH_SENSOR = 120
DEFER_MARGIN_AZURE_ML = 300


class AzureComputeBase(Generic[HookT]):
    """Owns the hook (one per task instance) and the check-once-then-defer wait."""

    #: The hook class and the name of the attribute/argument holding its connection id (its default
    #: is the hook's ``default_conn_name``).
    hook_class: ClassVar[type]
    conn_id_field: ClassVar[str]
    #: Slack added to the trigger's deadline for Airflow's own defer timeout.
    defer_margin: ClassVar[float] = DEFER_MARGIN_BATCH_OPERATOR

    deferrable: bool
    log: Any

    @cached_property
    def hook(self) -> HookT:
        """The hook for this task's connection, built once (it caches its SDK client)."""
        return self.hook_class(**{self.conn_id_field: getattr(self, self.conn_id_field)})

    def wait_for(self, context: Context, trigger: AzurePollingTrigger, method_name: str,
                 timeout: float | None, *, check_first: bool = True) -> Any:
        """Hand ``method_name(context, event)`` the trigger's event: now, from the triggerer, or from here."""
        if check_first:
            event = asyncio.run(trigger.check_once())
            if event is not None:
                return getattr(self, method_name)(context, event)
        if self.deferrable:
            self.log.info("%s; deferring the wait to the triggerer", trigger.waiting_on())
            self.defer(  # type: ignore[attr-defined]
                trigger=trigger, method_name=method_name,
                timeout=timedelta(seconds=float(timeout) + self.defer_margin) if timeout else None,
            )
        return getattr(self, method_name)(context, asyncio.run(trigger.first_event()))
