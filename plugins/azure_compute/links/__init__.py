"""Extra links: ``base.PersistedLink`` stores the URL in XCom when the task runs and reads it back.

A link never fails a task and needs no connection to draw: ``batch`` (portal pages of the pool
and the account), ``aml`` (the job in Azure ML studio), ``blob`` (the month's report).
"""
