"""Extra link from the publish task to the month's report.html in Blob Storage.

The URL is the blob's plain address (never a SAS): opening it needs read access
to the output container, as any published file does.
"""
from __future__ import annotations

from azure_compute.links.base import PersistedLink

#: XCom key under which the publish task records the report's URL.
REPORT_URL_XCOM_KEY = "monthly_report_url"


class MonthlyReportLink(PersistedLink):
    """'Monthly report' button: the report.html the task published."""

    name = "Monthly report"
    key = REPORT_URL_XCOM_KEY

    @classmethod
    def clean(cls, url: str) -> str:
        return url.split("?")[0]  # never a SAS in a link
