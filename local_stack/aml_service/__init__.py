"""A local Azure Machine Learning endpoint: the ARM surface MLClient uses, and a runner for parallel jobs.

Start it with ``python -m local_stack.aml_service --port P --state-dir DIR
--storage-connection-string CS``. It listens on 127.0.0.1 only, keeps its state in
SQLite under the state folder, and stores code, inputs and outputs in Azurite.
"""
