"""The monthly job's logic, plain Python on Azure Blob clients; the DAG file only wires it.

- config:        the one settings module: ``DagConfig`` (``MONTHLY_DETECTION_*``), fixed tunables, prices
- layout:        blob paths, the month, run keys and one naming rule for Batch and Azure ML ids
- plan:          the DAG run's params validated into a ``RunPlan`` (the month parsed once)
- weights:       ``WeightsRef``: a weights file, OpenVINO folder or model name, staged, for Batch and Azure ML
- schema:        the predictions CSV on the merge side (the scoring contract's columns, plus redaction)
- staging:       list a month's images, write shard manifests and stage.json
- scoring_tasks: one Batch task description per shard
- runtime:       how the scoring runtime reaches a Batch node (start task or container image)
- aml_results:   route Azure ML's appended rows to the staged shards
- merge:         stream shard results into one predictions.csv and reconcile with the manifests
- usage:         node time and cost of a month
- dates, summary, parquet, report: the month's per-day counts, summary.json, predictions.parquet, report.html
- publish:       atomic upload of predictions.csv and .parquet, then report.html and summary.json
- tasks:         the DAG's task bodies, as functions of the config, the plan and XCom's dicts

Airflow: ``tasks`` reaches it through the hooks (``WasbHook``, ``BatchHook``,
``AzureMLHook``) and ``plan.require_connections`` through ``BaseHook``, each
imported inside the function that needs it; every other module has no Airflow.
"""
