"""A retry policy for the Batch clients that also retries a throttled POST or PATCH.

azure-core's ``RetryPolicy`` (``azure/core/pipeline/policies/_retry.py``) retries a 429 on any
method only when the answer carries ``Retry-After``; without it, a POST or PATCH is retried only on
500, 503 and 504. Batch throttles add-collection and create calls with 429 like any other, and a
throttled request was not carried out, so repeating it is safe (creates are idempotent here anyway:
``PoolExists``, ``JobExists``, ``TaskExists``). ``Retry-After`` is still honoured; without it the
policy's exponential backoff applies.
"""
from __future__ import annotations

from typing import Any

from azure.core.pipeline.policies import AsyncRetryPolicy, RetryPolicy

THROTTLED = 429


class _RetryThrottledWrites:
    """Treat a 429 as retryable whatever the method."""

    def _is_method_retryable(self, settings: dict[str, Any], request: Any, response: Any = None) -> bool:
        if response is not None and response.status_code == THROTTLED:
            return True
        return super()._is_method_retryable(settings, request, response=response)  # type: ignore[misc]


class BatchRetryPolicy(_RetryThrottledWrites, RetryPolicy):
    """For ``azure.batch.BatchClient``."""


class AsyncBatchRetryPolicy(_RetryThrottledWrites, AsyncRetryPolicy):
    """For ``azure.batch.aio.BatchClient``."""
