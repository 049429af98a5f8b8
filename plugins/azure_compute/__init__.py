"""Airflow building blocks for Azure Batch and Azure Machine Learning.

Shaped like a provider package: ``hooks`` wrap the official SDK clients,
``operators`` act, ``triggers`` poll asynchronously in the triggerer,
``sensors`` wait, and ``links`` point to the Azure portal. The package lives in
the Airflow plugins folder, which every Airflow component (scheduler, worker,
triggerer, API server) puts on its import path.
"""
