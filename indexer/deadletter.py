"""The dead-letter index ``audit-rejected-YYYY.MM.DD``: every record the receiver refused.

Nothing is silently dropped: a record that failed validation or decoding, a record whose
event id is already stored with different content (a conflict), and a document that
Elasticsearch refused (a mapping error) all become one dead-letter document with the
reasons and the original record in full.

Document shape::

    @timestamp          receive time (date_nanos); also picks the daily index
    kind                validation | conflict | mapping | decode
    reasons[]           {field, rule, message}, keyword fields
    service.name        resource service.name, when present
    event.action        audit.action, when present
    event.id            audit.event.id (or the event id in conflict), when present
    content_hash        SHA-256 of what the emitter sent (as in audit.content_hash)
    stored_content_hash for conflicts: the hash of the document already stored
    original            the record as sent (JSON); mapped ``enabled: false``: kept in
                        _source, never parsed into fields, so it cannot cause a mapping error.
                        Past :data:`MAX_ORIGINAL_BYTES` of JSON it is cut:
                        ``{"truncated": true, "bytes": n, "sha256": hex, "json_prefix": text}``
                        (the hash is of the whole JSON, so the record sent can be matched)
    original_format     otlp_log_record | event_document (when only the built document is
                        left, e.g. a conflict found while replaying the spool)
    document            the event document that Elasticsearch refused (mapping errors)

The mapping is ``dynamic: false`` and the typed fields are produced here, bounded, so a
dead-letter document does not itself hit a mapping error. Its ``_id`` is derived from its
content, so writing it twice (a retried request, a spool replay) stores it once per day.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import orjson

from indexer.bulk import BulkItem
from indexer.indices import REJECTED_ALIAS, REJECTED_PATTERN, rejected_index
from indexer.mappings import TemplateSettings, index_settings
from otel_audit.document import format_ns
from otel_audit.record import LogRecordData
from otel_audit.schema import Schema
from otel_audit.validate import Violation

__all__ = [
    "KINDS",
    "MAX_ORIGINAL_BYTES",
    "bare_item",
    "bounded",
    "rejected_item",
    "rejected_template",
]

KINDS = ("validation", "conflict", "mapping", "decode")

MAX_ORIGINAL_BYTES = 16 * 1024
"""JSON bytes of ``original`` (and ``document``) kept in full; longer ones are cut, with
their SHA-256, so junk sent to the receiver is not amplified into Elasticsearch."""

_MAX_KEYWORD_BYTES = 1024
_MAX_MESSAGE_BYTES = 4096
_MAX_REASONS = 100
_MAX_DEPTH = 32


def _keyword() -> dict[str, Any]:
    return {"type": "keyword", "ignore_above": _MAX_KEYWORD_BYTES}


def rejected_template(
    schema: Schema | None = None, settings: TemplateSettings | None = None
) -> dict[str, Any]:
    """The composable index template for ``audit-rejected-*``."""
    settings = settings or TemplateSettings()
    return {
        "index_patterns": [REJECTED_PATTERN],
        "priority": 200,
        "version": 1,
        "_meta": {"description": "otel-audit records refused by the receiver, with reasons"},
        "template": {
            "aliases": {REJECTED_ALIAS: {}},
            "settings": {"index": index_settings(settings)},
            "mappings": {
                # Unknown fields are kept in _source but never mapped: no mapping errors here.
                "dynamic": False,
                "date_detection": False,
                "properties": {
                    "@timestamp": {"type": "date_nanos"},
                    "kind": _keyword(),
                    "reasons": {
                        "properties": {
                            "field": _keyword(),
                            "rule": _keyword(),
                            "message": {
                                "type": "keyword",
                                "ignore_above": _MAX_KEYWORD_BYTES,
                            },
                        }
                    },
                    "service": {"properties": {"name": _keyword()}},
                    "event": {"properties": {"action": _keyword(), "id": _keyword()}},
                    "content_hash": _keyword(),
                    "stored_content_hash": _keyword(),
                    "original_format": _keyword(),
                    "original": {"type": "object", "enabled": False},
                    "document": {"type": "object", "enabled": False},
                },
            },
        },
    }


def _cut(value: str, limit: int) -> str:
    data = value.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return value.encode("utf-8", "replace").decode("utf-8") if not value.isascii() else value
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str) or value == "":
        return None
    return _cut(value, limit)


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON that orjson and Elasticsearch accept, losing nothing.

    Bytes become ``{"$bytes": base64}``, integers beyond 64 bits and non-finite floats
    become strings, lone surrogates are escaped, and structures nested deeper than the
    parser's comfort are kept as one JSON string.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        if depth >= _MAX_DEPTH:
            return _deep_as_text(value)
        return {str(json_safe(k)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        if depth >= _MAX_DEPTH:
            return _deep_as_text(value)
        return [json_safe(v, depth + 1) for v in value]
    return repr(value)


def _deep_as_text(value: Any) -> str:
    try:
        return orjson.dumps(value, default=repr).decode("utf-8")
    except (TypeError, orjson.JSONEncodeError, RecursionError):
        return repr(value)[:1_000_000]


def _reason_dicts(reasons: Sequence[Violation]) -> list[dict[str, str]]:
    out = [
        {
            "field": _cut(str(v.field), _MAX_KEYWORD_BYTES),
            "rule": _cut(str(v.rule), _MAX_KEYWORD_BYTES),
            "message": _cut(str(v.message), _MAX_MESSAGE_BYTES),
        }
        for v in reasons[:_MAX_REASONS]
    ]
    if len(reasons) > _MAX_REASONS:
        out.append(
            {
                "field": "record",
                "rule": "too_many",
                "message": f"{len(reasons) - _MAX_REASONS} more reasons not listed",
            }
        )
    return out


def rejected_item(
    kind: str,
    reasons: Sequence[Violation],
    *,
    received_ns: int,
    record: LogRecordData | None = None,
    original: dict[str, Any] | None = None,
    content_hash: str | None = None,
    stored_content_hash: str | None = None,
    event_id: str | None = None,
    document: dict[str, Any] | None = None,
) -> BulkItem:
    """The dead-letter write for one refused record.

    Give ``record`` when the decoded record is at hand; otherwise ``original`` (the
    built event document, e.g. replayed from the spool).
    """
    if kind not in KINDS:
        raise ValueError(f"dead-letter kind must be one of {', '.join(KINDS)}, got {kind!r}")
    doc: dict[str, Any] = {
        "@timestamp": format_ns(received_ns),
        "kind": kind,
        "reasons": _reason_dicts(reasons),
    }
    if record is not None:
        attrs = record.attributes if isinstance(record.attributes, dict) else {}
        resource = record.resource if isinstance(record.resource, dict) else {}
        service = _text(resource.get("service.name"), _MAX_KEYWORD_BYTES)
        action = _text(attrs.get("audit.action"), _MAX_KEYWORD_BYTES)
        emitted_id = _text(attrs.get("audit.event.id"), _MAX_KEYWORD_BYTES)
        doc["original"] = bounded(json_safe(record.as_wire_dict()))
        doc["original_format"] = "otlp_log_record"
    else:
        source = original or {}
        service = _text(source.get("service", {}).get("name"), _MAX_KEYWORD_BYTES)
        action = _text(source.get("event", {}).get("action"), _MAX_KEYWORD_BYTES)
        emitted_id = None
        doc["original"] = bounded(json_safe(source))
        doc["original_format"] = "event_document"
    if service:
        doc["service"] = {"name": service}
    event: dict[str, str] = {}
    if action:
        event["action"] = action
    shown_id = _text(event_id, _MAX_KEYWORD_BYTES) or emitted_id
    if shown_id:
        event["id"] = shown_id
    if event:
        doc["event"] = event
    if content_hash:
        doc["content_hash"] = content_hash
    if stored_content_hash:
        doc["stored_content_hash"] = stored_content_hash
    if document is not None:
        doc["document"] = bounded(json_safe(document))
    return BulkItem(
        index=rejected_index(received_ns),
        doc_id=_dead_letter_id(doc),
        document=doc,
        content_hash=None,
        record=None,
    )


def bounded(value: Any, limit: int = MAX_ORIGINAL_BYTES) -> Any:
    """``value`` (plain JSON) itself when its JSON is at most ``limit`` bytes, else a stub
    with the JSON's size, SHA-256 and first bytes."""
    try:
        data = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        data = repr(value).encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return value
    return {
        "truncated": True,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "json_prefix": data[:limit].decode("utf-8", "ignore"),
    }


def _dead_letter_id(doc: dict[str, Any]) -> str:
    # Same refusal of the same record -> same id: a retry or a replay is stored once.
    basis = {k: v for k, v in doc.items() if k != "@timestamp"}
    data = orjson.dumps(basis, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()[:40]


def bare_item(item: BulkItem, why: str) -> BulkItem:
    """A dead-letter write reduced to fields that cannot fail: the original as JSON text.

    For a dead-letter document Elasticsearch refused anyway (``why``): its reasons gain
    one that says so, and its ``_id`` gains ``-bare``.
    """
    doc = item.document
    bare = {
        "@timestamp": doc.get("@timestamp"),
        "kind": doc.get("kind"),
        "reasons": [
            *doc.get("reasons", []),
            {"field": "dead_letter", "rule": "mapping", "message": why[:1000]},
        ],
        "original_format": "json_text",
        "original": {"json": orjson.dumps(doc).decode("utf-8", "replace")},
    }
    return BulkItem(index=item.index, doc_id=item.doc_id + "-bare", document=bare)
