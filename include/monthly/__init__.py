"""The monthly job's library logic, plain Python on Azure Blob clients (no Airflow).

- layout:   containers, blob paths, month parsing, run keys and Batch job ids (the settings)
- schema:   the predictions CSV columns and statuses
- staging:  list a month's images, write shard manifests and stage.json
- merge:    stream shard results into one predictions.csv and reconcile with the manifests
- summary:  the month's summary.json content
- publish:  atomic upload of predictions.csv, then summary.json
"""
