"""Build the stored Elasticsearch document of a validated audit event.

The document uses ECS names where ECS has one and ``audit.*`` for the rest; the mapping
from wire attributes to stored fields comes from the schema. Call :func:`build_document`
only for records that :func:`otel_audit.validate.validate` accepted.

The document never changes after it is written: its RFC 8785 canonical JSON is the leaf
of the integrity chain. So every value in it is JSON-exact: integers beyond 2**53 and
non-finite floats are stored as strings, bytes as base64. Values of the emitter's choosing
(floats, keys of any characters) appear only below ``audit.extra`` and ``audit.origin``;
the rest of the document is strings, lists of strings and small integers, which lets
:func:`otel_audit.integrity.leaf_hash_of_event` skip walking it (a property test holds
the builder to this).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import json
import math
import time
import uuid
from typing import Any

import orjson

from otel_audit.record import LogRecordData
from otel_audit.schema import Schema, load_schema

__all__ = [
    "RESOURCE_ALIASES",
    "build_document",
    "build_document_and_plainness",
    "content_hash",
    "derive_event_id",
    "format_ns",
]

_MAX_SAFE_INT = 2**53 - 1


def format_ns(ts_ns: int) -> str:
    """RFC 3339 UTC with nanoseconds, as Elasticsearch ``date_nanos`` accepts it."""
    secs, nanos = divmod(ts_ns, 1_000_000_000)
    # Zero-padded by the leading 1 of 10**9 + nanos: a third of the cost of a :09d spec.
    return _format_secs(secs) + "." + str(1_000_000_000 + nanos)[1:] + "Z"


@functools.lru_cache(maxsize=4096)
def _format_secs(secs: int) -> str:
    # Events of one batch share their seconds: strftime once per second, not per field.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(type(value).__name__)


def content_hash(record: LogRecordData) -> str:
    """SHA-256 hex of what the emitter sent (nothing the receiver adds).

    Two deliveries of the same record give the same hash; a create conflict whose stored
    hash differs is a different record claiming the same event id. A hash the decoder already
    computed (``record.content_sha256``, the same function of the same bytes) is used as is.
    """
    if record.content_sha256 is not None:
        return record.content_sha256
    wire = record.as_wire_dict()
    try:
        data = orjson.dumps(wire, option=orjson.OPT_SORT_KEYS, default=_json_default)
    except (TypeError, orjson.JSONEncodeError):
        # Values orjson refuses (ints beyond 64 bits, odd types): a slower, total encoding.
        data = json.dumps(wire, sort_keys=True, default=repr, ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
    return hashlib.sha256(data).hexdigest()


def derive_event_id(content_sha256_hex: str) -> str:
    """A deterministic UUID (version 8) for records that came without ``audit.event.id``."""
    raw = bytearray(bytes.fromhex(content_sha256_hex)[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


class _Cutter:
    """Applies the schema's size limits, remembering which stored fields were cut."""

    __slots__ = ("cut", "marker", "schema")

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.marker = schema.truncation_marker
        self.cut: list[str] = []

    def text(self, value: str, limit: int, stored: str) -> str:
        if len(value) * 4 <= limit:  # cannot exceed the limit even at 4 bytes per char
            return value
        data = value.encode("utf-8", "surrogatepass")
        if len(data) <= limit:
            return value
        keep = max(0, limit - len(self.marker.encode("utf-8")))
        self.cut.append(stored)
        return data[:keep].decode("utf-8", "ignore") + self.marker

    def free(self, value: Any, stored: str) -> Any:
        """Make a free-form attribute value JSON-exact and bounded."""
        if isinstance(value, str):
            return self.text(value, self.schema.limits.max_text_bytes, stored)
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            return value if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else str(value)
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            return str(value)
        if isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii")
        if isinstance(value, dict):
            return {str(k): self.free(v, f"{stored}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.free(v, stored) for v in value]
        return str(value)


def _body_text(body: Any, cutter: _Cutter, limit: int) -> str | None:
    if body is None or body == "":
        return None
    if isinstance(body, str):
        text = body
    elif isinstance(body, bytes):
        text = base64.b64encode(body).decode("ascii")
    else:
        try:
            text = orjson.dumps(body, default=_json_default).decode("utf-8")
        except (TypeError, orjson.JSONEncodeError):
            text = json.dumps(body, default=repr, ensure_ascii=False)
    return cutter.text(text, limit, "message")


class _Plan:
    """What the document builder needs from a schema, worked out once per schema."""

    __slots__ = (
        "extra_keys",
        "extra_limit",
        "known",
        "resource_fields",
        "resource_known",
        "write_fields",
    )

    def __init__(self, schema: Schema) -> None:
        self.write_fields = _compile_field_writer(schema)
        self.resource_fields = tuple(
            (rf.attribute, _path(rf.stored)[:-1], _path(rf.stored)[-1])
            for rf in schema.resource_fields
        )
        self.known = schema.by_attribute
        self.resource_known = schema.resource_by_attribute
        self.extra_limit = schema.limits.max_text_bytes
        self.extra_keys: dict[tuple[str, ...], tuple[tuple[str, ...], bool]] = {}
        """The keys the schema does not name, and whether they are all ASCII, by the
        attribute keys they came in."""


@functools.cache
def _plan(schema: Schema) -> _Plan:
    return _Plan(schema)


# --- the schema's field mapping as generated code ------------------------------------------
#
# Placing the schema's attributes is most of the document build. A generic loop over the
# schema's fields pays, per field, for unpacking its settings, walking its parent keys and
# testing options it does not have. Instead, _field_writer_source turns the schema into the
# source of one straight-line function with the settings written in as constants, and
# _compile_field_writer compiles it once per schema. The generated function does exactly
# what the loop did, in the same order (so the documents keep their key order): for each
# field with a non-empty string value, cut it if the schema says so, create its parent
# objects on first use, store it, note it as untrusted if clients supply it, and store the
# normalized IP copies. Parent objects live in locals, created on first use; "event" and
# "audit" already exist when the writer runs.

_BUILT_BEFORE_FIELDS = {
    (): frozenset({"@timestamp", "event", "audit"}),
    ("event",): frozenset({"id", "kind", "category", "outcome", "dataset", "ingested", "created"}),
    ("audit",): frozenset({"schema_version", "event_id_source", "content_hash"}),
}
"""The objects build_document fills before the field writer runs, with their keys."""


def _field_writer_source(schema: Schema) -> str:
    """Python source of ``write_fields(attrs, doc, event, audit, cutter, untrusted)``."""
    fields = [f for f in schema.fields if f.attribute != "audit.event.id"]
    leaves = {_path(f.stored) for f in fields}
    names: dict[tuple[str, ...], str] = {(): "doc", ("event",): "event", ("audit",): "audit"}

    def node(parents: tuple[str, ...], body: list[str], indent: str) -> str:
        """The local holding the object at ``parents``; appends the lines creating it."""
        if parents in _BUILT_BEFORE_FIELDS:
            return names[parents]
        key = parents[-1]
        if parents in leaves or key in _BUILT_BEFORE_FIELDS.get(parents[:-1], ()):
            raise ValueError(f"schema stores a value at {'.'.join(parents)} and fields below it")
        name = names.setdefault(parents, f"node_{len(names)}")
        body.append(f"{indent}if {name} is None:")
        above = node(parents[:-1], body, indent + "    ")
        body.append(f"{indent}    {name} = {above}[{key!r}] = {{}}")
        return name

    body: list[str] = []
    for f in fields:
        path = _path(f.stored)
        body.append(f"    value = get({f.attribute!r})")
        body.append("    if isinstance(value, str) and value != '':")
        if f.oversize == "truncate" and f.max_bytes:
            body.append(f"        if len(value) * 4 > {f.max_bytes}:")
            body.append(f"            value = cutter.text(value, {f.max_bytes}, {f.stored!r})")
        parent = node(path[:-1], body, "        ")
        body.append(f"        {parent}[{path[-1]!r}] = value")
        if f.client_supplied:
            body.append(f"        untrusted.append({f.stored!r})")
        if f.ip_copy:
            body.append("        ip = as_ip(value)")
            body.append("        if ip is not None:")
            for copy in f.ip_copy:
                ip_path = _path(copy)
                parent = node(ip_path[:-1], body, "            ")
                body.append(f"            {parent}[{ip_path[-1]!r}] = ip")
    head = [
        "def write_fields(attrs, doc, event, audit, cutter, untrusted):",
        "    get = attrs.get",
        *(f"    {name} = None" for name in names.values() if name.startswith("node_")),
    ]
    return "\n".join(head + body) + "\n"


def _compile_field_writer(schema: Schema) -> Any:
    source = _field_writer_source(schema)
    namespace: dict[str, Any] = {"as_ip": _as_ip}
    exec(compile(source, f"<document fields of schema {schema.version}>", "exec"), namespace)
    return namespace["write_fields"]


_last_ingested: list[tuple[int, str]] = [(-1, "")]


def _format_ingested(received_ns: int) -> str:
    # Every document of a batch shares its receive time: format it once.
    last = _last_ingested[0]
    if last[0] == received_ns:
        return last[1]
    text = format_ns(received_ns)
    _last_ingested[0] = (received_ns, text)
    return text


def _free_values(
    values: dict[str, Any], known: dict[str, Any], cutter: _Cutter, prefix: str, limit: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        if k in known:
            continue
        # Short strings cannot exceed the limit: skip the general walk for the common case.
        if type(v) is str and len(v) * 4 <= limit:
            out[k] = v
        else:
            out[k] = cutter.free(v, f"{prefix}{k}")
    return out


_EXTRA_KEYS_MAX = 1024


_PLAIN_FREE_TYPES = frozenset({str, int, bool, type(None)})
"""Free-form values whose orjson form is their RFC 8785 form (ints: once made safe)."""


def _attribute_extras(
    attrs: dict[str, Any], plan: _Plan, cutter: _Cutter
) -> tuple[dict[str, Any], bool]:
    """``_free_values`` of the attributes the schema does not name, and whether they are
    plain (see :func:`build_document_and_plainness`)."""
    # The records of a service send the same keys in the same order: which of them are
    # extras is worked out once per key sequence, not tested key by key for every record.
    keys = tuple(attrs)
    cached = plan.extra_keys.get(keys)
    if cached is None:
        known = plan.known
        extra = tuple(k for k in keys if k not in known)
        cached = (extra, "".join(extra).isascii())
        if len(plan.extra_keys) >= _EXTRA_KEYS_MAX:
            plan.extra_keys.clear()
        plan.extra_keys[keys] = cached
    extra, plain = cached
    out: dict[str, Any] = {}
    limit = plan.extra_limit
    for k in extra:
        v = attrs[k]
        if type(v) is str and len(v) * 4 <= limit:
            out[k] = v
        else:
            # free() makes integers safe (big ones become strings), so any int it returns
            # prints the same under orjson and RFC 8785; floats and containers do not.
            v = out[k] = cutter.free(v, f"audit.extra.{k}")
            if type(v) not in _PLAIN_FREE_TYPES:
                plain = False
    return out, plain


RESOURCE_ALIASES = {"deployment.environment.name": "deployment.environment"}
"""Resource attributes read from an older name when absent under the current one."""

_Placed = tuple[tuple[tuple[str, ...], str, str], ...]
_last_resource: list[tuple[tuple[tuple[str, Any], ...], _Placed, dict[str, Any], bool]] = []
"""The items of the last all-string resource with its stored values: a batch shares one."""


def _resource_part(
    resource: dict[str, Any], plan: _Plan, cutter: _Cutter
) -> tuple[_Placed, dict[str, Any], bool]:
    """(parent keys, leaf key, value) of each stored resource field, the other values, and
    whether those are plain (see :func:`build_document_and_plainness`)."""
    items = tuple(resource.items())
    if _last_resource:
        seen, placed, origin, plain = _last_resource[0]
        # Ordered items of str values: equal means the same stored values in the same order.
        if seen == items:
            return placed, origin, plain
    placements = []
    for attribute, parents, leaf in plan.resource_fields:
        rv = resource.get(attribute)
        if rv is None and attribute in RESOURCE_ALIASES:
            rv = resource.get(RESOURCE_ALIASES[attribute])
        if isinstance(rv, str) and rv:
            placements.append((parents, leaf, rv))
    cuts = len(cutter.cut)
    origin = _free_values(
        resource, plan.resource_known, cutter, "audit.origin.resource.", plan.extra_limit
    )
    plain = _PLAIN_FREE_TYPES.issuperset(map(type, origin.values())) and "".join(origin).isascii()
    # Only an all-string resource with nothing cut is remembered: other values compare
    # equal across types (1 == True) or could change under the copy, and every document
    # must record its own cuts.
    if len(cutter.cut) == cuts and all(type(v) is str for _, v in items):
        _last_resource[:] = [(items, tuple(placements), origin, plain)]
    return tuple(placements), origin, plain


def build_document(
    record: LogRecordData,
    *,
    received_ns: int,
    event_id: str | None = None,
    content_sha256: str | None = None,
    schema: Schema | None = None,
) -> dict[str, Any]:
    """The stored document for a validated record.

    ``event_id`` defaults to the record's ``audit.event.id`` or, when absent, an id derived
    from ``content_sha256`` (computed here when not given).
    """
    return build_document_and_plainness(
        record,
        received_ns=received_ns,
        event_id=event_id,
        content_sha256=content_sha256,
        schema=schema,
    )[0]


def build_document_and_plainness(
    record: LogRecordData,
    *,
    received_ns: int,
    event_id: str | None = None,
    content_sha256: str | None = None,
    schema: Schema | None = None,
) -> tuple[dict[str, Any], bool]:
    """:func:`build_document`, and whether the document is *plain*.

    Plain: its free-form parts (``audit.extra``, ``audit.origin``) hold only strings, safe
    integers, booleans and nulls under ASCII keys. The rest of a document always is (see
    the module docstring), so a plain document's RFC 8785 form is exactly its ``orjson``
    sorted-key form, and its leaf hash is the hash of those bytes: the sealing write path
    skips :func:`otel_audit.integrity.leaf_hash_of_event`'s checks, which the builder
    answers here for almost nothing. ``False`` only means "let the leaf hash check".
    """
    schema = schema or load_schema()
    plan = _plan(schema)
    attrs = record.attributes
    resource = record.resource
    cutter = _Cutter(schema)
    sha = content_sha256 or content_hash(record)
    emitted_id = attrs.get("audit.event.id")
    if event_id is None:
        event_id = emitted_id.lower() if isinstance(emitted_id, str) and emitted_id else None
    id_source = "emitter" if emitted_id else "derived"
    if event_id is None:
        event_id = derive_event_id(sha)

    flags: list[str] = []
    ts = record.time_unix_nano
    if not ts:
        ts = record.observed_time_unix_nano
        flags.append("no_event_time")

    category = attrs["audit.category"]
    outcome = attrs["audit.outcome"]
    event: dict[str, Any] = {
        "id": event_id,
        "kind": "event",
        "category": list(schema.ecs_category.get(category, ())),
        "outcome": schema.ecs_outcome.get(outcome, "unknown"),
        "dataset": "otel_audit.events",
        "ingested": _format_ingested(received_ns),
    }
    audit: dict[str, Any] = {
        "schema_version": schema.version,
        "event_id_source": id_source,
        "content_hash": sha,
    }
    doc: dict[str, Any] = {"@timestamp": format_ns(ts), "event": event, "audit": audit}
    if record.observed_time_unix_nano:
        event["created"] = format_ns(record.observed_time_unix_nano)

    untrusted: list[str] = []
    plan.write_fields(attrs, doc, event, audit, cutter, untrusted)

    related_users = [v for v in (attrs.get("audit.actor.id"), attrs.get("audit.actor.name")) if v]
    related: dict[str, Any] = {"user": sorted(set(related_users))}
    client_ip = doc.get("client", {}).get("ip")
    if client_ip:
        related["ip"] = [client_ip]
    doc["related"] = related

    extra, plain = _attribute_extras(attrs, plan, cutter)
    if extra:
        audit["extra"] = extra

    placed, origin, origin_plain = _resource_part(resource, plan, cutter)
    for parents, leaf, rv in placed:
        node = doc
        for part in parents:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            node = nxt
        node[leaf] = rv
    if origin:
        audit["origin"] = {"resource": dict(origin)}

    if record.trace_id:
        doc["trace"] = {"id": record.trace_id}
        if record.span_id:
            doc["span"] = {"id": record.span_id}
        if record.flags:
            audit["trace_flags"] = int(record.flags) & 0xFF
    else:
        flags.append("no_trace")
    if "correlation_id" not in audit and record.trace_id:
        audit["correlation_id"] = record.trace_id

    # Short text cannot exceed a limit even at 4 bytes per char: only longer text is cut.
    level = record.severity_text
    if level:
        doc["log"] = {
            "level": level if len(level) * 4 <= 64 else cutter.text(level, 64, "log.level")
        }
    body = record.body
    if type(body) is str and len(body) * 4 <= schema.limits.max_body_bytes:
        if body:
            doc["message"] = body
    else:
        message = _body_text(body, cutter, schema.limits.max_body_bytes)
        if message is not None:
            doc["message"] = message
    name = record.event_name
    if name:
        audit["event_name"] = (
            name if len(name) * 4 <= 256 else cutter.text(name, 256, "audit.event_name")
        )
    scope_name = record.scope_name
    scope_version = record.scope_version
    if scope_name or scope_version:
        audit["scope"] = {
            "name": scope_name
            if len(scope_name) * 4 <= 256
            else cutter.text(scope_name, 256, "audit.scope.name"),
            "version": scope_version
            if len(scope_version) * 4 <= 256
            else cutter.text(scope_version, 256, "audit.scope.version"),
        }

    skew_ns = received_ns - ts
    if abs(skew_ns) > schema.limits.max_clock_skew_s * 1_000_000_000:
        flags.append("clock_skew")
        audit["clock_skew_ms"] = skew_ns // 1_000_000
    if untrusted:
        audit["untrusted"] = untrusted
    if cutter.cut:
        audit["truncated"] = cutter.cut
    if flags:
        audit["flags"] = flags
    return doc, plain and origin_plain


@functools.lru_cache(maxsize=4096)
def _path(stored: str) -> tuple[str, ...]:
    return tuple(stored.split("."))


@functools.lru_cache(maxsize=4096)
def _as_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        return None
