"""The one place that turns outcomes into OTLP answers, for gRPC and for HTTP.

================================  ==================================  ==========================
error kind                        gRPC                                HTTP
================================  ==================================  ==========================
Unauthenticated                   UNAUTHENTICATED                     401 + Status
BodyTimeout                       DEADLINE_EXCEEDED                   408 + Status
InvalidRequest                    INVALID_ARGUMENT                    400 + google.rpc.Status
UnsupportedMediaType (HTTP only)  -                                   415 + Status
RequestTooLarge                   RESOURCE_EXHAUSTED (no RetryInfo)   413 + Status
Overloaded (busy, over budget)    RESOURCE_EXHAUSTED + RetryInfo      429 + Retry-After
Unavailable                       UNAVAILABLE + RetryInfo             503 + Retry-After
any other exception               UNAVAILABLE + RetryInfo             503 + Retry-After
================================  ==================================  ==========================

The OpenTelemetry Collector's OTLP exporter retries RESOURCE_EXHAUSTED only when it
carries RetryInfo (and waits the delay given), so every "busy, retry later" refusal
(in-flight budget, call slots, large-call lane, writer rate limit) is an Overloaded:
without RetryInfo the Collector would drop the batch for good.

An unexpected exception is answered as retryable: the records are not known to be durable,
and a permanent answer would make the client drop them. Partial rejection is not an error:
it is OK / 200 with ``partial_success``. HTTP bodies use the request's content type
(protobuf ``google.rpc.Status`` or its OTLP/JSON form); gRPC carries RetryInfo in the
``grpc-status-details-bin`` trailer, as ``grpcio-status`` would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from receiver.errors import (
    InvalidRequest,
    Overloaded,
    ReceiverError,
    RequestTooLarge,
    RetryableError,
    Unavailable,
)
from receiver.identity import Unauthenticated

__all__ = [
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_PROTOBUF",
    "BodyTimeout",
    "GrpcAnswer",
    "HttpAnswer",
    "UnsupportedMediaType",
    "grpc_error",
    "http_error",
    "logs_success",
    "traces_success",
]

CONTENT_TYPE_PROTOBUF = "application/x-protobuf"
CONTENT_TYPE_JSON = "application/json"
_DEFAULT_RETRY_AFTER_S = 1.0


class UnsupportedMediaType(InvalidRequest):
    """HTTP only: the Content-Type or Content-Encoding is not one OTLP allows (415)."""


class BodyTimeout(InvalidRequest):
    """The body (HTTP) or the request message (gRPC) did not arrive within its timeout
    (408 / DEADLINE_EXCEEDED)."""


@dataclass(frozen=True, slots=True)
class GrpcAnswer:
    """A non-OK gRPC status with its trailing metadata."""

    code: grpc.StatusCode
    message: str
    trailing_metadata: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """An HTTP error answer: status, body in the request's content type, extra headers."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]


def _retry_after(exc: BaseException) -> float:
    if isinstance(exc, RetryableError):
        return max(0.0, exc.retry_after_s)
    return _DEFAULT_RETRY_AFTER_S


def _kind(exc: BaseException) -> tuple[grpc.StatusCode, int, bool]:
    """(gRPC code, HTTP status, retryable) for an exception."""
    if isinstance(exc, UnsupportedMediaType):
        return grpc.StatusCode.INVALID_ARGUMENT, 415, False
    if isinstance(exc, BodyTimeout):
        return grpc.StatusCode.DEADLINE_EXCEEDED, 408, False
    if isinstance(exc, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED, 401, False
    if isinstance(exc, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, 400, False
    if isinstance(exc, RequestTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, 413, False
    if isinstance(exc, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, 429, True
    if isinstance(exc, Unavailable):
        return grpc.StatusCode.UNAVAILABLE, 503, True
    return grpc.StatusCode.UNAVAILABLE, 503, True


def _message(exc: BaseException) -> str:
    if not isinstance(exc, ReceiverError):
        return f"internal error ({type(exc).__name__}); retry later"
    text = str(exc) or type(exc).__name__
    return text[:1024]


def grpc_error(exc: BaseException) -> GrpcAnswer:
    """The gRPC status for ``exc``; retryable ones carry google.rpc.RetryInfo."""
    code, _http, retryable = _kind(exc)
    message = _message(exc)
    metadata: tuple[tuple[str, bytes], ...] = ()
    if retryable:
        delay = _retry_after(exc)
        info = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(
                seconds=int(delay), nanos=int((delay - int(delay)) * 1e9)
            )
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
        metadata = (("grpc-status-details-bin", status.SerializeToString()),)
    return GrpcAnswer(code, message, metadata)


def http_error(exc: BaseException, *, json: bool) -> HttpAnswer:
    """The HTTP answer for ``exc``: a google.rpc.Status body, Retry-After when retryable."""
    code, http_status, retryable = _kind(exc)
    message = _message(exc)
    headers: dict[str, str] = {}
    if retryable:
        headers["Retry-After"] = str(max(1, math.ceil(_retry_after(exc))))
    if json:
        body = orjson.dumps({"code": code.value[0], "message": message})
        return HttpAnswer(http_status, body, CONTENT_TYPE_JSON, headers)
    body = status_pb2.Status(code=code.value[0], message=message).SerializeToString()
    return HttpAnswer(http_status, body, CONTENT_TYPE_PROTOBUF, headers)


def logs_success(rejected: int, error_message: str, *, json: bool) -> bytes:
    """An ``ExportLogsServiceResponse`` body, with partial_success when anything was rejected."""
    return _success(
        ExportLogsServiceResponse,
        "rejected_log_records",
        "rejectedLogRecords",
        rejected,
        error_message,
        json=json,
    )


def traces_success(rejected: int, error_message: str, *, json: bool) -> bytes:
    """An ``ExportTraceServiceResponse`` body, with partial_success when spans were rejected."""
    return _success(
        ExportTraceServiceResponse,
        "rejected_spans",
        "rejectedSpans",
        rejected,
        error_message,
        json=json,
    )


def _success(
    response_type: Callable[[], Any],
    count_field: str,
    json_count_key: str,
    rejected: int,
    error_message: str,
    *,
    json: bool,
) -> bytes:
    # Logs and traces answer alike; only the message type and the name of the count differ.
    if json:
        if rejected <= 0:
            return b"{}"
        return orjson.dumps(
            {"partialSuccess": {json_count_key: rejected, "errorMessage": error_message}}
        )
    response = response_type()
    if rejected > 0:
        setattr(response.partial_success, count_field, rejected)
        response.partial_success.error_message = error_message
    return bytes(response.SerializeToString())
