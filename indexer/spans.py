"""Compact span documents in ``audit-spans-YYYY.MM.DD``, so audit events can be shown in
the trace they happened in: the ``spans`` config section, the document, the template.
The receiver's span store (:mod:`receiver.spans`) writes them.

Spans are context for audit events, not audit evidence: they are stored small (ids,
name, kind, service, times, status and a handful of well-known attributes, the rest in one
bounded ``flattened`` field), kept for a shorter time than events (``retention_days``,
recorded in the template and in every index's mapping ``_meta`` for the retention job),
and a failed span write is logged and counted rather than failing the export.

Each document's ``_id`` is ``<trace_id>-<span_id>`` written with ``op_type=create``, so
an exporter's retry of the same batch stores nothing twice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import orjson

from indexer.indices import SPANS_ALIAS, SPANS_INDEX_PREFIX
from indexer.mappings import TemplateSettings, index_settings
from otel_audit.document import format_ns
from otel_audit.schema import Schema
from otel_audit.span_record import SpanData

__all__ = [
    "SpansConfig",
    "build_span_document",
    "spans_template",
]

_log = logging.getLogger(__name__)

SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")

# Attributes worth a real field: what a trace view shows beside the span name.
KEY_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "http.request.method": ("http.request.method", "keyword"),
    "http.method": ("http.request.method", "keyword"),
    "http.route": ("http.route", "keyword"),
    "url.path": ("url.path", "keyword"),
    "http.target": ("url.path", "keyword"),
    "http.response.status_code": ("http.response.status_code", "long"),
    "http.status_code": ("http.response.status_code", "long"),
    "rpc.system": ("rpc.system", "keyword"),
    "rpc.service": ("rpc.service", "keyword"),
    "rpc.method": ("rpc.method", "keyword"),
    "db.system": ("db.system", "keyword"),
    "db.system.name": ("db.system", "keyword"),
    "db.operation.name": ("db.operation.name", "keyword"),
    "messaging.system": ("messaging.system", "keyword"),
    "messaging.destination.name": ("messaging.destination.name", "keyword"),
    "error.type": ("error.type", "keyword"),
}
_MAX_OTHER_ATTRIBUTES = 32
_MAX_VALUE_CHARS = 256
_MAX_NAME_CHARS = 512


@dataclass(frozen=True, slots=True)
class SpansConfig:
    """The ``spans`` section of the receiver config."""

    enabled: bool = True
    """Store spans at all (the trace view needs them)."""
    retention_days: int = 7
    """How long span indices are kept; events usually live far longer."""
    index_prefix: str = SPANS_INDEX_PREFIX
    """Daily index name prefix; the date comes from the span's start time."""

    def __post_init__(self) -> None:
        if self.retention_days < 1:
            raise ValueError(f"spans.retention_days: must be >= 1, got {self.retention_days}")
        if not self.index_prefix or not self.index_prefix.islower():
            raise ValueError(f"spans.index_prefix: {self.index_prefix!r} must be lowercase")


def _put(doc: dict[str, Any], dotted: str, value: Any) -> None:
    node = doc
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _short(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _scalar(value: Any) -> Any:
    if isinstance(value, str):
        return _short(value, _MAX_VALUE_CHARS)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.hex()[:_MAX_VALUE_CHARS]
    try:
        return _short(orjson.dumps(value, default=str).decode("utf-8"), _MAX_VALUE_CHARS)
    except (TypeError, orjson.JSONEncodeError):
        return _short(str(value), _MAX_VALUE_CHARS)


def build_span_document(span: SpanData) -> dict[str, Any]:
    """The compact stored form of one span."""
    start = span.start_time_unix_nano
    end = max(span.end_time_unix_nano, start)
    doc: dict[str, Any] = {
        "@timestamp": format_ns(start),
        "trace": {"id": span.trace_id},
        "span": {
            "id": span.span_id,
            "name": _short(span.name, _MAX_NAME_CHARS),
            "kind": SPAN_KINDS[span.kind] if 0 <= span.kind < len(SPAN_KINDS) else "unspecified",
            "status": {
                "code": STATUS_CODES[span.status_code]
                if 0 <= span.status_code < len(STATUS_CODES)
                else "unset"
            },
        },
        "event": {"duration": end - start, "end": format_ns(end)},
    }
    if span.status_message:
        doc["span"]["status"]["message"] = _short(span.status_message, _MAX_VALUE_CHARS)
    if span.parent_span_id:
        doc["parent"] = {"id": span.parent_span_id}
    service: dict[str, str] = {}
    for attr, key in (
        ("service.name", "name"),
        ("service.version", "version"),
        ("service.namespace", "namespace"),
        ("service.instance.id", "node.name"),
    ):
        v = span.resource.get(attr)
        if isinstance(v, str) and v:
            service[key] = _short(v, _MAX_VALUE_CHARS)
    if service:
        doc["service"] = _nest(service)
    if span.scope_name:
        doc["span"]["scope"] = _short(span.scope_name, _MAX_VALUE_CHARS)
    other: dict[str, Any] = {}
    for key, value in span.attributes.items():
        known = KEY_ATTRIBUTES.get(key)
        if known is not None:
            stored, kind = known
            if kind == "long":
                if isinstance(value, int) and not isinstance(value, bool):
                    _put(doc, stored, value)
                    continue
                if isinstance(value, str) and value.isdigit() and len(value) < 10:
                    _put(doc, stored, int(value))
                    continue
            elif isinstance(value, str) and value:
                _put(doc, stored, _short(value, _MAX_VALUE_CHARS))
                continue
        if len(other) < _MAX_OTHER_ATTRIBUTES:
            other[key] = _scalar(value)
    if other:
        doc["span"]["attributes"] = other
    return doc


def _nest(flat: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in flat.items():
        _put(out, k, v)
    return out


def spans_template(
    schema: Schema, settings: TemplateSettings, config: SpansConfig | None = None
) -> dict[str, Any]:
    """The composable index template for ``audit-spans-*``."""
    config = config or SpansConfig()
    kw: dict[str, Any] = {"type": "keyword", "ignore_above": 1024}
    date: dict[str, Any] = {"type": "date_nanos"}
    props: dict[str, Any] = {
        "@timestamp": date,
        "trace": {"properties": {"id": kw}},
        "parent": {"properties": {"id": kw}},
        "span": {
            "properties": {
                "id": kw,
                "name": kw,
                "kind": kw,
                "scope": kw,
                "status": {"properties": {"code": kw, "message": kw}},
                "attributes": {"type": "flattened", "ignore_above": 256, "depth_limit": 4},
            }
        },
        "service": {
            "properties": {
                "name": kw,
                "version": kw,
                "namespace": kw,
                "node": {"properties": {"name": kw}},
            }
        },
        "event": {"properties": {"duration": {"type": "long"}, "end": date}},
    }
    for stored, kind in {v for v in KEY_ATTRIBUTES.values()}:
        node = props
        parts = stored.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {"properties": {}})["properties"]
        node[parts[-1]] = {"type": "long"} if kind == "long" else kw
    meta = {
        "description": "otel-audit compact spans (trace context of audit events)",
        "retention_days": config.retention_days,
    }
    return {
        "index_patterns": [config.index_prefix + "*"],
        "priority": 200,
        "version": 1,
        "_meta": meta,
        "template": {
            "aliases": {SPANS_ALIAS: {}},
            "settings": {
                # Spans are context, not evidence: no per-request fsync.
                "index": index_settings(settings, durability="async")
            },
            "mappings": {
                "dynamic": "strict",
                "date_detection": False,
                "_meta": meta,
                "properties": props,
            },
        },
    }
