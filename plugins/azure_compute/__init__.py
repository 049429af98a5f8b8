"""Airflow building blocks for Azure Batch and Azure Machine Learning.

Shaped like a provider package: ``hooks`` wrap the official SDK clients and make
every Azure call; ``operators`` act (``operators/base.py``: the hook, its connection and
the check-once-then-defer wait, shared with the sensors); ``triggers`` poll
asynchronously in the triggerer (``triggers/base.py``: the one wait loop); ``sensors``
wait; ``links`` point to the Azure portal (``links/base.py``: URLs kept in XCom).
``batch_progress`` holds the pure decisions poke and deferred mode share. The package lives in
the Airflow plugins folder, which every Airflow component (scheduler, worker,
triggerer, API server) puts on its import path.
"""

import logging

# The Azure SDK logs every request's and response's headers at INFO, which buries
# the progress lines users watch in task logs. Raise this logger's level to see them.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
