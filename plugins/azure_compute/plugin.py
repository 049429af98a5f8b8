"""Registers our operator extra links with Airflow (the UI resolves links by class)."""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from azure_compute.links.aml import AzureMLStudioJobLink
from azure_compute.links.batch import AzureBatchJobLink, AzureBatchPoolLink
from azure_compute.links.blob import MonthlyReportLink


class AzureComputePlugin(AirflowPlugin):
    name = "azure_compute"
    operator_extra_links = [AzureBatchPoolLink(), AzureBatchJobLink(), AzureMLStudioJobLink(), MonthlyReportLink()]
