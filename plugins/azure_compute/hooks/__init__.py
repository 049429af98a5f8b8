"""Hooks: every Azure SDK call the operators, sensors, links and DAG make goes through one of these.

``batch.BatchHook`` (Azure Batch: pools, jobs, tasks, node files, an async client for triggers),
``aml.AzureMLHook`` (Azure ML: jobs, run history, compute, datastores, batch endpoints) and
``blob.BlobSasHook`` (least-privilege SAS and small blob reads). ``batch_retry`` is the Batch
clients' retry policy. Nothing outside this package touches an SDK client (``hook.client``).
"""
