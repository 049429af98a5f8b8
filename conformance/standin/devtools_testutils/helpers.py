"""Helpers the suite's decorators import."""
from __future__ import annotations

import inspect


def is_live_and_not_recording() -> bool:
    """False, so the suite's decorator installs its transport hooks (our redirect to the local service)."""
    return False


def trim_kwargs_from_test_function(fn, kwargs: dict) -> None:
    """Drop kwargs the test function does not accept (the real helper's contract)."""
    if getattr(fn, "__is_preparer", False):
        return
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    for key in [k for k in kwargs if k not in params]:
        del kwargs[key]
