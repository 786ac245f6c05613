"""Records whose stored document the native decoder already built.

For nearly every record of a request (valid, with plain values: see below) the native
extension can do the whole per-event job of the ingest write path while it decodes:
validate, build the stored document, serialize it, hash its leaf. Python then only
wraps the bytes. The decoder attaches that result to the record as
``record.prepared``, a :data:`Prepared` tuple; for any record it is not certain of it
leaves ``prepared`` None, and the Python path (:func:`otel_audit.validate.validate`,
:func:`otel_audit.document.build_document`) decides as before.

The Python path is the reference: :func:`reference` computes the same tuple with it, and
``tests/receiver/ingest/test_prepare_native.py`` holds the native one byte-identical to it over
generated requests. A record is prepared natively only when

- the fast validator (``otel_audit.validate._plain_valid``) would accept it, with every
  value of a schema field printable ASCII;
- its document needs no cut (nothing longer than its limit) and is *plain* (no float,
  array or map among the attributes, the resource's extra values or the body; ASCII keys);
- ``client.address``, when present, is an IPv4 address or not an address at all.

A plan (:func:`native_plan`) carries the schema's settings into the extension, once: its
fields, limits, and by role the stored paths and literal values of everything else the
document holds, so that no name or value of the document is written in the extension.
Documents are serialized with sorted keys: those bytes are the leaf's RFC 8785 form.

The authenticated writer of a request (:mod:`receiver.identity`) is stored in every
document as the top-level object ``writer`` (``{"auth": ..., "id": ...}``, plain ASCII
from the configuration). It sorts after every top-level field the schema writes, so the
native decoder, given the writer's own plan (``Plan.with_writer``, see
:mod:`receiver.otlp.export`), appends it to a prepared document before hashing the leaf,
and :func:`prepare_in_python` adds it to the document it builds: both give the same bytes.
No record attribute can reach it: attributes are stored below ``audit.*``.
"""

from __future__ import annotations

import logging
from typing import Any

from indexer.bulk import BulkItem
from indexer.indices import EVENTS_INDEX_PREFIX, event_index
from otel_audit.document import build_document_for_write, content_hash
from otel_audit.integrity import leaf_hash_of_event
from otel_audit.record import LogRecordData
from otel_audit.schema import Schema
from otel_audit.validate import validate
from receiver import native
from receiver.identity import CURRENT_WRITER, WRITER_FIELD

__all__ = ["Prepared", "native_plan", "prepare_in_python", "reference"]

_log = logging.getLogger(__name__)

Prepared = tuple[str, str, bytes, int, str, bytes | None, str]
"""(index name, event id, the item's two NDJSON lines, offset of the document line in
them, content hash, leaf hash or None when the plan has no leaves, ``@timestamp``)."""


def native_plan(schema: Schema, *, leaf: bool) -> Any | None:
    """The extension's plan for ``schema`` (hashing leaves when ``leaf``), or None when the
    native decoder is not in use or cannot take this schema (the Python path then does
    everything, as it always can)."""
    ext = native.module()
    if ext is None:
        return None
    try:
        return ext.Plan(_plan_settings(schema), leaf)
    except ValueError as exc:
        _log.warning(
            "the native decoder cannot prepare documents for this schema; Python will",
            extra={"reason": str(exc)},
        )
        return None


def _plan_settings(schema: Schema) -> dict[str, Any]:
    """The schema, as the extension's ``Plan`` reads it."""
    limits = schema.limits
    return {
        "version": schema.version,
        "index_prefix": EVENTS_INDEX_PREFIX,
        "marker": schema.marker_attribute,
        "max_attributes": limits.max_attributes,
        "max_resource_attributes": limits.max_resource_attributes,
        "max_attribute_key_bytes": limits.max_attribute_key_bytes,
        "max_text_bytes": limits.max_text_bytes,
        "max_body_bytes": limits.max_body_bytes,
        "max_clock_skew_s": limits.max_clock_skew_s,
        "max_future_s": limits.max_future_s,
        "min_time_unix_nano": limits.min_time_unix_nano,
        "resource_required_categories": sorted(schema.resource_required_categories),
        # What the builders know by role (otel_audit.schema): where the document holds each
        # value, the attributes they read, the literal values and the record fields' limits.
        "paths": dict(schema.paths),
        "attributes": dict(schema.attributes),
        "constants": dict(schema.constants),
        "max_bytes": dict(schema.role_max_bytes),
        "ecs_category": {k: list(v) for k, v in schema.ecs_category.items()},
        "ecs_outcome": dict(schema.ecs_outcome),
        "ecs_type": {
            "verbs": dict(schema.ecs_type.verb_types),
            "categories": {
                category: {
                    "verbs": sorted(schema.ecs_type.category_verbs.get(category, ())),
                    "outcomes": {
                        o: list(t)
                        for o, t in schema.ecs_type.category_outcomes.get(category, {}).items()
                    },
                    "default": list(default),
                }
                for category, default in schema.ecs_type.category_default.items()
            },
        },
        "fields": [
            {
                "attribute": f.attribute,
                "stored": f.stored,
                "keyword": f.type == "keyword",
                "required": f.required,
                "reject": f.oversize == "reject",
                "truncate": f.oversize == "truncate",
                "max_bytes": f.max_bytes,
                "enum": list(f.enum) if f.enum else None,
                "pattern": f.pattern,
                "client_supplied": bool(f.client_supplied),
                "ip_copy": list(f.ip_copy or ()),
                "array": f.array,
                "aliases": list(f.aliases),
                "related_user": f.related_user,
                "actor_copies": {
                    kind: sorted(copies.items()) for kind, copies in (f.actor_copies or {}).items()
                },
            }
            for f in schema.fields
        ],
        "resource_fields": [
            {
                "attribute": rf.attribute,
                "alias": rf.alias or None,
                "stored": rf.stored,
                "always": rf.required == "always",
                "max_bytes": rf.max_bytes,
            }
            for rf in schema.resource_fields
        ],
    }


def prepare_in_python(
    record: LogRecordData, *, received_ns: int, schema: Schema, leaf: bool
) -> Prepared:
    """The Python path's write of a record :func:`otel_audit.validate.validate` accepted:
    the :data:`Prepared` tuple the native decoder makes for the records it covers. The
    ingest write path uses it for every other record."""
    sha = content_hash(record)
    doc, plain, event_id, timestamp = build_document_for_write(
        record, received_ns=received_ns, content_sha256=sha, schema=schema
    )
    writer = CURRENT_WRITER.get()
    if writer is not None and writer.name:
        doc[WRITER_FIELD] = {"auth": writer.auth, "id": writer.name}
    ts = record.time_unix_nano or record.observed_time_unix_nano
    item = BulkItem(event_index(ts), event_id, doc, sha, record, sort_keys=True)
    # Serialized and hashed now, while the document just built is still in the CPU's
    # caches; after the rest of the request is built it would be read back from memory.
    encoded = item.encoded()
    leaf_hash = leaf_hash_of_event(doc, item.sorted_source(), plain=plain) if leaf else None
    source_at = len(encoded) - len(item.source_json()) - 1
    return (item.index, item.doc_id, encoded, source_at, sha, leaf_hash, timestamp)


def reference(
    record: LogRecordData, *, received_ns: int, schema: Schema, leaf: bool
) -> Prepared | None:
    """What the Python path makes of ``record``: None when it rejects it, else the
    :data:`Prepared` tuple the ingest write path sends."""
    if validate(record, now_ns=received_ns, schema=schema):
        return None
    return prepare_in_python(record, received_ns=received_ns, schema=schema, leaf=leaf)
