"""Sensors: wait on a Batch job or pool, or an Azure ML job; deferrable by configuration.

Poke mode is Airflow's sensor loop around ``poke`` (one hook call each); deferred mode is
``AzureComputeBase.wait_for`` with the matching trigger. Both end in ``execute_complete``.
"""
