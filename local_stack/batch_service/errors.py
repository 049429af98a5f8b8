"""Azure-shaped errors: the JSON body and status the real Batch service answers with."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone


class BatchServiceError(Exception):
    """An error the service reports as `{"code", "message": {"lang", "value"}, "values"}`."""

    def __init__(self, status: int, code: str, message: str, values: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.values = values or {}

    def body(self, request_id: str | None = None) -> dict:
        return error_body(self.code, self.message, self.values, request_id)


def error_body(code: str, message: str, values: dict[str, str] | None = None, request_id: str | None = None) -> dict:
    """The error document; like Azure, the message carries the request id and time."""
    request_id = request_id or str(uuid.uuid4())
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
    body: dict = {
        "odata.metadata": "https://batch.local/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
        "code": code,
        "message": {"lang": "en-US", "value": f"{message}\nRequestId:{request_id}\nTime:{stamp}"},
    }
    if values:
        body["values"] = [{"key": k, "value": v} for k, v in values.items()]
    return body


def not_found(kind: str, ident: str) -> BatchServiceError:
    """PoolNotFound / JobNotFound / TaskNotFound / NodeNotFound / FileNotFound."""
    return BatchServiceError(404, f"{kind}NotFound", f"The specified {kind.lower()} does not exist.")


def exists(kind: str) -> BatchServiceError:
    """PoolExists / JobExists / TaskExists."""
    return BatchServiceError(409, f"{kind}Exists", f"The specified {kind.lower()} already exists.")


def invalid_property(name: str, value: object, reason: str) -> BatchServiceError:
    return BatchServiceError(
        400,
        "InvalidPropertyValue",
        "The value provided for one of the properties in the request body is invalid.",
        {"PropertyName": name, "PropertyValue": str(value), "Reason": reason},
    )


def missing_property(name: str) -> BatchServiceError:
    return BatchServiceError(
        400,
        "MissingRequiredProperty",
        "A required property was not specified in the request body.",
        {"PropertyName": name},
    )


def invalid_query(name: str, value: str, reason: str) -> BatchServiceError:
    return BatchServiceError(
        400,
        "InvalidQueryParameterValue",
        "Value for one of the query parameters specified in the request URI is invalid.",
        {"QueryParameterName": name, "QueryParameterValue": value, "Reason": reason},
    )
