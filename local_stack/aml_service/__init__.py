"""A local Azure Machine Learning endpoint: the ARM surface MLClient uses, and a runner for parallel jobs.

Start it with ``python -m local_stack.aml_service --port P --state-dir DIR
--storage-connection-string CS``. It listens on 127.0.0.1 only, keeps its state in
SQLite under the state folder, and stores code, inputs and outputs in Azurite.

Modules: ``app`` (REST surface), ``jobs`` (a job resolved into a ``ParallelRunPlan``, its
states), ``parallel_driver`` (the subprocess that runs one plan as Azure ML's parallel run
driver does), ``resource_store`` (SQLite), ``blob`` (the Azurite account) and
``aml_endpoint`` (start and stop the endpoint in the background).
"""
