"""Triggers: the asynchronous waits the triggerer runs.

``base.AzurePollingTrigger`` is the one wait loop (deadline, transient-error budget, final
errors, change-only progress logging, serialization, the events ``success``/``failure``/
``timeout``/``error``); ``batch`` and ``aml`` configure it with one ``poll_once`` each. They live
in the plugins package so the triggerer imports them by the class path they serialize.
"""
