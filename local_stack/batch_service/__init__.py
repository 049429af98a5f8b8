"""A local, wire-compatible Azure Batch service that runs tasks as local processes.

Start it with `python -m local_stack.batch_service --port P --state-dir DIR
--account NAME --key KEY [--storage-connection-string CS]`; see README.md here.
"""
