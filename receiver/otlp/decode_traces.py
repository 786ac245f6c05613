"""Decode OTLP trace export requests (protobuf or OTLP/JSON) into SpanData lists.

Same rules as :mod:`receiver.otlp.decode` for logs. A span must have a 16-byte trace id and an
8-byte span id (non-zero) and, when present, an 8-byte parent span id; a span breaking
that is rejected per span (counted in partial_success), not the whole request.
Span events and links are not kept: the span store links audit events to traces, for
which the span itself is enough.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_audit.span_record import SpanData
from receiver.errors import InvalidRequest
from receiver.otlp.decode import (
    hex_id_from_json,
    iter_json_items,
    json_attributes,
    json_int,
    json_object,
    json_str,
    parse_json_body,
    pb_attributes,
)

__all__ = ["DecodedSpans", "decode_traces_json", "decode_traces_protobuf"]

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


@dataclass(slots=True)
class DecodedSpans:
    """The spans of one request: ``spans`` for the consumer, ``rejected`` with reasons."""

    spans: list[SpanData] = field(default_factory=list)
    rejected: list[SpanData] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.spans) + len(self.rejected)

    def add(self, span: SpanData, problem: str | None) -> None:
        """Keep ``span`` for the consumer, or reject it for ``problem``."""
        if problem is None:
            self.spans.append(span)
        else:
            self.rejected.append(span)
            self.reasons.append(problem)


def _pb_id_problem(trace_id: bytes, span_id: bytes, parent: bytes) -> str | None:
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
        return f"trace_id must be 16 non-zero bytes, got {len(trace_id)} bytes"
    if len(span_id) != 8 or span_id == _ZERO_SPAN:
        return f"span_id must be 8 non-zero bytes, got {len(span_id)} bytes"
    if parent and len(parent) != 8:
        return f"parent_span_id must be 8 bytes, got {len(parent)}"
    return None


def decode_traces_protobuf(body: bytes) -> DecodedSpans:
    """Decode a serialized ``ExportTraceServiceRequest``."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError) as exc:
        raise InvalidRequest(f"body is not an ExportTraceServiceRequest: {exc}") from None
    out = DecodedSpans()
    for rs in request.resource_spans:
        resource = pb_attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope_name = ss.scope.name
            scope_version = ss.scope.version
            for sp in ss.spans:
                trace_id = sp.trace_id
                span_id = sp.span_id
                parent = sp.parent_span_id
                status = sp.status
                span = SpanData(
                    trace_id=trace_id.hex(),
                    span_id=span_id.hex(),
                    parent_span_id="" if parent == _ZERO_SPAN else parent.hex(),
                    name=sp.name,
                    kind=sp.kind,
                    start_time_unix_nano=sp.start_time_unix_nano,
                    end_time_unix_nano=sp.end_time_unix_nano,
                    status_code=status.code,
                    status_message=status.message,
                    attributes=pb_attributes(sp.attributes),
                    resource=resource,
                    scope_name=scope_name,
                    scope_version=scope_version,
                    trace_state=sp.trace_state,
                    flags=sp.flags,
                )
                problem = _pb_id_problem(trace_id, span_id, parent)
                out.add(span, problem)
    return out


def decode_traces_json(body: bytes) -> DecodedSpans:
    """Decode an OTLP/JSON ``ExportTraceServiceRequest``."""
    doc = parse_json_body(body)
    out = DecodedSpans()
    walk = iter_json_items(doc, "resourceSpans", "scopeSpans", "spans")
    for resource, scope_name, scope_version, sp, w in walk:
        tid, tid_bad = hex_id_from_json(sp.get("traceId"), 16, f"{w}.traceId")
        sid, sid_bad = hex_id_from_json(sp.get("spanId"), 8, f"{w}.spanId")
        pid, pid_bad = hex_id_from_json(sp.get("parentSpanId"), 8, f"{w}.parentSpanId")
        status = json_object(sp.get("status"), f"{w}.status")
        span = SpanData(
            trace_id=tid,
            span_id=sid,
            parent_span_id=pid,
            name=json_str(sp.get("name"), f"{w}.name"),
            kind=json_int(sp.get("kind"), f"{w}.kind", bits=32, signed=True),
            start_time_unix_nano=json_int(sp.get("startTimeUnixNano"), f"{w}.startTimeUnixNano"),
            end_time_unix_nano=json_int(sp.get("endTimeUnixNano"), f"{w}.endTimeUnixNano"),
            status_code=json_int(status.get("code"), f"{w}.status.code", bits=32, signed=True),
            status_message=json_str(status.get("message"), f"{w}.status.message"),
            attributes=json_attributes(sp.get("attributes"), f"{w}.attributes"),
            resource=resource,
            scope_name=scope_name,
            scope_version=scope_version,
            trace_state=json_str(sp.get("traceState"), f"{w}.traceState"),
            flags=json_int(sp.get("flags"), f"{w}.flags", bits=32),
        )
        problem = tid_bad or sid_bad or pid_bad
        if problem is None and not tid:
            problem = "traceId is required"
        if problem is None and not sid:
            problem = "spanId is required"
        out.add(span, problem)
    return out
