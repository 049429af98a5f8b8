"""The one wait loop: a polling trigger that Batch and Azure ML triggers configure.

Shaped like the Amazon provider's ``AwsBaseWaiterTrigger``: this class owns the loop
(poll, sleep, deadline), the transient-error budget, which errors are final, change-only
progress logging, serialization and the event vocabulary. A concrete trigger gives its
configuration (``fields``, ``subject``), how to open a session (``session``) and one
``poll_once``; the operators run that same ``poll_once`` inline to "check once, then defer".

Every event is ``{"status": ..., "message": ..., **subject}`` with status one of:

- ``success``: the wait reached what it waited for (the caller may still judge it, e.g. the
  Batch job sensor applies the error threshold to the counts the event carries);
- ``failure``: the resource reached an end state that is not the wanted one (a Failed job,
  a pool whose nodes all failed);
- ``timeout``: the deadline passed first;
- ``error``: the resource could not be read (no such resource, refused credentials, or more
  transient errors in a row than the budget allows).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from airflow.triggers.base import BaseTrigger, TriggerEvent

SUCCESS, FAILURE, TIMEOUT, ERROR = "success", "failure", "timeout", "error"
#: Statuses that mean the credentials were refused: Batch answers a wrong shared key with 403
#: AuthenticationFailed, which the SDK raises as a plain HttpResponseError (only 401 maps to
#: ClientAuthenticationError).
REFUSED_STATUSES = (401, 403)


def is_final(err: BaseException) -> bool:
    """An error that polling again cannot cure.

    A missing resource, refused credentials (401/403), or a ``ValueError`` (a connection
    lacking a field, a bad argument: our own checks raise it before any request).
    """
    if isinstance(err, (ResourceNotFoundError, ClientAuthenticationError, ValueError)):
        return True
    return isinstance(err, HttpResponseError) and err.status_code in REFUSED_STATUSES


def first_line(err: BaseException) -> str:
    """``Type: first line of the message``: enough to act on, without a multi-line SDK dump."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


class AzurePollingTrigger(BaseTrigger):
    """Poll until ``poll_once`` returns an event, the deadline passes, or polling fails for good.

    :param poll_interval: seconds between two polls.
    :param end_time: the deadline as a Unix time (None: wait for ever). An absolute time
        survives a triggerer restart unchanged, so the wait's limit stays honest.
    """

    #: Transient poll errors (after the SDK's own retries) tolerated in a row; one more ends the wait.
    transient_errors_tolerated: ClassVar[int] = 5

    def __init__(self, *, poll_interval: float, end_time: float | None) -> None:
        super().__init__()
        self.poll_interval = poll_interval
        self.end_time = end_time
        self._last_progress: Any = None

    # -- what a concrete trigger provides ------------------------------------------
    def fields(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """The subclass's own constructor arguments (serialized with the base's)."""
        raise NotImplementedError

    def subject(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """What every event names (``{"job_id": ...}``)."""
        raise NotImplementedError

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        """What ``poll_once`` talks through (a client), open for the whole wait."""
        yield None

    async def poll_once(self, session: Any) -> dict[str, Any] | None:  # pragma: no cover - abstract
        """One look: the event payload when the wait is over, else None."""
        raise NotImplementedError

    def timeout_message(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def error_message(self, err: BaseException) -> str:
        return first_line(err)

    def waiting_on(self) -> str:
        """What is waited on, for the "deferring" log line."""
        return ", ".join(f"{key} {value}" for key, value in self.subject().items() if value)

    # -- shared --------------------------------------------------------------------
    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path of ``type(self)`` (importable from the plugins package) and its arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {**self.fields(), "poll_interval": self.poll_interval, "end_time": self.end_time},
        )

    def event(self, status: str, message: str, **extra: Any) -> dict[str, Any]:
        return {"status": status, "message": message, **self.subject(), **extra}

    def progress(self, state: Any, describe) -> None:
        """Log ``describe()`` when ``state`` differs from the last poll's (quiet while nothing moves)."""
        if state != self._last_progress:
            self._last_progress = state
            self.log.info("%s", describe())

    def deadline_passed(self) -> bool:
        return self.end_time is not None and time.time() >= self.end_time

    async def run(self) -> AsyncIterator[TriggerEvent]:
        transient_errors = 0
        async with self.session() as session:
            while True:
                try:
                    payload = await self.poll_once(session)
                    transient_errors = 0
                except Exception as err:  # noqa: BLE001 - a blip must not end a multi-hour wait
                    if is_final(err):
                        yield TriggerEvent(self.event(ERROR, self.error_message(err)))
                        return
                    transient_errors += 1
                    self.log.warning("poll failed (%d in a row, %d tolerated): %s",
                                     transient_errors, self.transient_errors_tolerated, first_line(err))
                    if transient_errors > self.transient_errors_tolerated:
                        yield TriggerEvent(self.event(ERROR, self.error_message(err)))
                        return
                    payload = None
                if payload is not None:
                    yield TriggerEvent(payload)
                    return
                if self.deadline_passed():
                    yield TriggerEvent(self.event(TIMEOUT, self.timeout_message()))
                    return
                await asyncio.sleep(self.poll_interval)

    async def first_event(self) -> dict[str, Any]:
        """Run the wait here until its event (the path of an operator that does not defer)."""
        async for event in self.run():
            return event.payload
        raise RuntimeError(f"{type(self).__name__} ended without an event")  # pragma: no cover

    async def check_once(self) -> dict[str, Any] | None:
        """One ``poll_once`` in its own session: the event when the wait is already over, else None.

        Errors propagate: the task, not the triggerer, reports a bad connection at once.
        """
        async with self.session() as session:
            return await self.poll_once(session)
