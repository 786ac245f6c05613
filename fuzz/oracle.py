"""What must hold for every input the OTLP decoders get: the fuzz harness's oracle.

One check per target, each taking the raw request body:

- ``logs_pb``: an ``ExportLogsServiceRequest`` through the native extension and through
  the pure-Python decoder (the ``OTEL_AUDIT_NATIVE_DECODER=0`` path). Both must give the
  same records, rejected records and reasons, or both refuse the body; every native
  content hash must equal the Python one; and every write the native decoder prepares
  (with the ingest plan) must be the one the Python ingest path makes of the same record.
- ``traces_pb``: an ``ExportTraceServiceRequest`` through the protobuf decoder.
- ``logs_json``, ``traces_json``: OTLP/JSON through the HTTP server's JSON decoders.

For every target the answer must be one the OTLP specification gives for the outcome: a
body that cannot be decoded is ``InvalidRequest`` (gRPC INVALID_ARGUMENT, HTTP 400 with a
Status body); anything else decodes into accepted and rejected items, one reason per
rejected item, answered OK / 200 with ``partial_success``. Any other exception would be
answered UNAVAILABLE / 503 and retried by the client for ever, so it is a finding.
Accepted items must carry well-formed ids, and every accepted log record must go through
the ingest path's validation and preparation without an exception.

A broken rule raises :class:`Finding`, whose ``signature`` groups findings of one cause.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import grpc

from otel_audit.document import content_hash
from otel_audit.integrity import content_sha256
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from receiver.errors import InvalidRequest
from receiver.ingest.prepare import native_plan, reference
from receiver.otlp import decode
from receiver.otlp.decode_traces import DecodedSpans, decode_traces_json, decode_traces_protobuf
from receiver.otlp.status import grpc_error, http_error, logs_success, traces_success

__all__ = ["RECEIVED_NS", "TARGETS", "Finding", "check", "native_enabled"]

RECEIVED_NS = 1_767_225_600_123_456_789
"""The receive time every prepared write is made with (fixed, so a finding replays)."""

_SCHEMA = load_schema()
_PLAN = native_plan(_SCHEMA, leaf=True)
_TRACE_HEX = re.compile(r"\A[0-9a-f]{32}\Z")
_SPAN_HEX = re.compile(r"\A[0-9a-f]{16}\Z")


class Finding(AssertionError):
    """A rule of the oracle broken by one input."""

    def __init__(self, target: str, signature: str, detail: str) -> None:
        super().__init__(f"{target}: {signature}: {detail}")
        self.target = target
        self.signature = signature
        self.detail = detail


def native_enabled() -> bool:
    """Whether the native decoder is installed and in use (the differential needs it)."""
    return decode.NATIVE_DECODER and _PLAN is not None


def _comparable(value: Any) -> Any:
    """``value`` with its types spelled out: True is not 1, -0.0 is not 0.0, NaN is NaN."""
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, dict):
        return ("dict", [(_comparable(k), _comparable(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_comparable(v) for v in value])
    return (type(value).__name__, value)


def _record_view(record: LogRecordData) -> Any:
    return _comparable(
        [
            record.attributes,
            record.resource,
            record.time_unix_nano,
            record.observed_time_unix_nano,
            record.severity_number,
            record.severity_text,
            record.body,
            record.trace_id,
            record.span_id,
            record.flags,
            record.event_name,
            record.scope_name,
            record.scope_version,
            record.dropped_attributes_count,
        ]
    )


def _refusal(target: str, exc: InvalidRequest, json: bool) -> str:
    """Check that a refused body gets the spec's answer; returns the error's class."""
    http = http_error(exc, json=json)
    answer = grpc_error(exc)
    if http.status != 400 or answer.code != grpc.StatusCode.INVALID_ARGUMENT:
        raise Finding(target, "refusal-not-400", f"{http.status} / {answer.code}: {exc}")
    if http.headers or answer.trailing_metadata:
        raise Finding(target, "refusal-retryable", f"{exc}")
    if not str(exc):
        raise Finding(target, "refusal-without-message", type(exc).__name__)
    return "invalid"


def _guard(target: str, name: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, with any exception but InvalidRequest turned into a finding."""
    try:
        return fn()
    except InvalidRequest:
        raise
    except Finding:
        raise
    except RecursionError as exc:
        raise Finding(target, f"{name}-RecursionError", str(exc)[:200]) from exc
    except Exception as exc:
        raise Finding(target, f"{name}-{type(exc).__name__}", str(exc)[:300]) from exc


def _check_logs(target: str, decoded: decode.DecodedLogs, json: bool) -> None:
    if len(decoded.reasons) != len(decoded.rejected) or not all(decoded.reasons):
        raise Finding(target, "reasons", f"{len(decoded.rejected)} rejected, {decoded.reasons}")
    for record in decoded.records:
        if record.trace_id and not _TRACE_HEX.match(record.trace_id):
            raise Finding(target, "accepted-bad-trace-id", repr(record.trace_id))
        if record.span_id and not _SPAN_HEX.match(record.span_id):
            raise Finding(target, "accepted-bad-span-id", repr(record.span_id))
        _guard(target, "content-hash", lambda r=record: content_hash(r))
        _guard(
            target,
            "ingest",
            lambda r=record: reference(r, received_ns=RECEIVED_NS, schema=_SCHEMA, leaf=True),
        )
    message = "; ".join(decoded.reasons[:3])
    _guard(target, "answer", lambda: logs_success(len(decoded.rejected), message, json=json))


def _check_spans(target: str, decoded: DecodedSpans, json: bool) -> None:
    if len(decoded.reasons) != len(decoded.rejected) or not all(decoded.reasons):
        raise Finding(target, "reasons", f"{len(decoded.rejected)} rejected, {decoded.reasons}")
    for span in decoded.spans:
        if not _TRACE_HEX.match(span.trace_id) or span.trace_id == "0" * 32:
            raise Finding(target, "accepted-bad-trace-id", repr(span.trace_id))
        if not _SPAN_HEX.match(span.span_id) or span.span_id == "0" * 16:
            raise Finding(target, "accepted-bad-span-id", repr(span.span_id))
        if span.parent_span_id and not _SPAN_HEX.match(span.parent_span_id):
            raise Finding(target, "accepted-bad-parent-id", repr(span.parent_span_id))
    message = "; ".join(decoded.reasons[:3])
    _guard(target, "answer", lambda: traces_success(len(decoded.rejected), message, json=json))


def _outcome(target: str, name: str, fn: Callable[[], decode.DecodedLogs]) -> Any:
    """The decoded logs, or "invalid" when refused as the spec says."""
    try:
        return _guard(target, name, fn)
    except InvalidRequest as exc:
        return _refusal(target, exc, json=False)


def check_logs_pb(body: bytes) -> None:
    target = "logs_pb"
    python = _outcome(target, "python", lambda: decode._decode_logs_protobuf_python(body))
    if python != "invalid":
        _check_logs(target, python, json=False)
    if not native_enabled():
        return
    ours = _outcome(target, "native", lambda: decode._decode_logs_protobuf_native(body))
    if (python == "invalid") != (ours == "invalid"):
        raise Finding(
            target,
            "accept-vs-refuse",
            f"python {'refuses' if python == 'invalid' else 'accepts'}, "
            f"native {'refuses' if ours == 'invalid' else 'accepts'}",
        )
    if python == "invalid":
        return
    _check_logs(target, ours, json=False)
    for kind in ("records", "rejected"):
        py_side = [_record_view(r) for r in getattr(python, kind)]
        native_side = [_record_view(r) for r in getattr(ours, kind)]
        if py_side != native_side:
            raise Finding(target, f"different-{kind}", _first_difference(py_side, native_side))
    if python.reasons != ours.reasons:
        raise Finding(target, "different-reasons", f"{python.reasons} != {ours.reasons}")
    for py_record, record in zip(
        python.records + python.rejected, ours.records + ours.rejected, strict=True
    ):
        if record.content_sha256 is None:
            continue
        expected = _guard(
            target, "python-hash", lambda r=py_record: content_sha256(r.as_wire_dict())
        )
        if record.content_sha256 != expected:
            raise Finding(
                target, "different-content-hash", f"{record.content_sha256} != {expected}"
            )
    _check_prepared(target, body, python)


def _check_prepared(target: str, body: bytes, python: decode.DecodedLogs) -> None:
    prepared = _guard(
        target,
        "native-prepare",
        lambda: decode._decode_logs_protobuf_native(body, _PLAN, RECEIVED_NS),
    )
    if len(prepared.records) != len(python.records) or prepared.reasons != python.reasons:
        raise Finding(target, "prepare-changed-records", f"{len(prepared.records)} records")
    for record, py_record in zip(prepared.records, python.records, strict=True):
        if record.prepared is None:
            continue
        expected = _guard(
            target,
            "ingest",
            lambda r=py_record: reference(r, received_ns=RECEIVED_NS, schema=_SCHEMA, leaf=True),
        )
        if expected is None:
            raise Finding(target, "prepared-what-python-rejects", repr(py_record)[:300])
        if tuple(record.prepared) != tuple(expected):
            raise Finding(
                target, "different-prepared-write", f"{record.prepared!r} != {expected!r}"[:600]
            )


def _first_difference(a: list[Any], b: list[Any]) -> str:
    if len(a) != len(b):
        return f"{len(a)} python vs {len(b)} native"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return f"item {i}: python {x!r} != native {y!r}"[:600]
    return "equal"


def check_traces_pb(body: bytes) -> None:
    target = "traces_pb"
    try:
        decoded = _guard(target, "python", lambda: decode_traces_protobuf(body))
    except InvalidRequest as exc:
        _refusal(target, exc, json=False)
        return
    _check_spans(target, decoded, json=False)


def check_logs_json(body: bytes) -> None:
    target = "logs_json"
    try:
        decoded = _guard(target, "json", lambda: decode.decode_logs_json(body))
    except InvalidRequest as exc:
        _refusal(target, exc, json=True)
        return
    _check_logs(target, decoded, json=True)


def check_traces_json(body: bytes) -> None:
    target = "traces_json"
    try:
        decoded = _guard(target, "json", lambda: decode_traces_json(body))
    except InvalidRequest as exc:
        _refusal(target, exc, json=True)
        return
    _check_spans(target, decoded, json=True)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "logs_pb": check_logs_pb,
    "traces_pb": check_traces_pb,
    "logs_json": check_logs_json,
    "traces_json": check_traces_json,
}


def check(target: str, body: bytes) -> None:
    """Run ``target``'s oracle on ``body``; raises :class:`Finding` when a rule breaks."""
    TARGETS[target](body)
