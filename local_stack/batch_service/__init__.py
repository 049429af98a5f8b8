"""A local, wire-compatible Azure Batch service that runs tasks as local processes.

Start it with `python -m local_stack.batch_service --port P --state-dir DIR
--account NAME --key KEY [--storage-connection-string CS]`; see README.md here.

Shape: `server.py` (HTTP, with `auth`, `odata`, `files`, and the handlers in `job_ops`
and `node_ops`) calls one `engine.Engine`, which is put together from mixins over the shared
state of `account_state.py`: `pool_lifecycle`, `node_lifecycle`, `job_lifecycle`,
`task_lifecycle`, `process_execution` and `scheduler`. Beside them: `account_store`
(SQLite), `task_process` (spawn and kill one command line), `blobfiles`, `registry`,
`job_prep`, `autopool`, `autoscale`, `dependencies`, `supported`, `faults`; `batch_endpoint`
starts and stops the service in the background.
"""
