"""Extra link from the publish task to the month's report.html in Blob Storage.

The URL is the blob's plain address (never a SAS): opening it needs read access
to the output container, as any published file does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

#: XCom key under which the publish task records the report's URL.
REPORT_URL_XCOM_KEY = "monthly_report_url"


class MonthlyReportLink(BaseOperatorLink):
    """'Monthly report' button: the report.html the task published."""

    name = "Monthly report"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        return XCom.get_value(key=REPORT_URL_XCOM_KEY, ti_key=ti_key) or ""

    @staticmethod
    def persist(context: Any, url: str) -> None:
        context["ti"].xcom_push(key=REPORT_URL_XCOM_KEY, value=url.split("?")[0])
