"""One base for our extra links: the URL is kept in XCom when the task runs; the button only reads it.

So the UI needs no connection to draw a button, and a link can never fail a task: building the
URL (which may read a connection) and storing it are guarded, and a problem is a warning in the
task log, with an empty button.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)


class PersistedLink(BaseOperatorLink):
    """A link whose URL the task stored under ``key`` in XCom."""

    #: The XCom key of the URL (one per link class).
    key: ClassVar[str]

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        try:
            return XCom.get_value(key=self.key, ti_key=ti_key) or ""
        except Exception as err:  # noqa: BLE001 - a button must never break a page
            log.warning("could not read the %r link: %s", self.name, err)
            return ""

    @classmethod
    def clean(cls, url: str) -> str:
        """What is stored of a URL (a subclass may drop a query string, for example)."""
        return url

    @classmethod
    def persist(cls, context: Any, url: str | Callable[[], str]) -> None:
        """Store the URL (or what ``url()`` builds) for the running task instance; never raises."""
        try:
            value = url() if callable(url) else url
            context["ti"].xcom_push(key=cls.key, value=cls.clean(value))
        except Exception as err:  # noqa: BLE001 - a link problem must not fail the task
            log.warning("the %r link was not recorded: %s: %s", getattr(cls, "name", cls.__name__),
                        type(err).__name__, err)
