"""Operators: each does one thing and is safe to retry.

``base.AzureComputeBase`` is shared by every operator and sensor: generic over its hook class, it
owns the connection default, one cached ``hook``, the deferrable default
(``operators.default_deferrable``), the defer-timeout margins and ``wait_for`` (check once with
the trigger's ``poll_once``, then defer or run the trigger inline). ``batch`` holds the Azure
Batch operators (pool, job, tasks, teardown), ``aml`` the Azure ML ones (compute, scoring
pipeline, batch endpoint) and the pipeline builder.
"""
