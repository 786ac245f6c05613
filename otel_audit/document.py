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
import contextlib
import functools
import ipaddress
import json
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from otel_audit.integrity.content import content_sha256
from otel_audit.record import LogRecordData
from otel_audit.schema import Schema, SchemaError, load_schema

__all__ = [
    "build_document",
    "build_document_and_plainness",
    "build_document_for_write",
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
    """SHA-256 hex of what the emitter sent (nothing the receiver adds), as
    ``docs/hashing.md`` defines it (:func:`otel_audit.integrity.content_sha256`).

    Two deliveries of the same record give the same hash; a create conflict whose stored
    hash differs is a different record claiming the same event id. A hash the decoder already
    computed (``record.content_sha256``, the same function of the same record) is used as is.
    """
    if record.content_sha256 is not None:
        return record.content_sha256
    return content_sha256(record.as_wire_dict())


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


def _body_text(body: Any, cutter: _Cutter, limit: int, stored: str) -> str | None:
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
    return cutter.text(text, limit, stored)


class _Plan:
    """What the document builder needs from a schema, worked out once per schema."""

    __slots__ = (
        "build",
        "extra_keys",
        "extra_limit",
        "extra_prefix",
        "known",
        "origin_prefix",
        "resource_fields",
        "resource_known",
    )

    def __init__(self, schema: Schema) -> None:
        self.resource_fields = tuple((rf.attribute, rf.alias) for rf in schema.resource_fields)
        self.known = schema.by_attribute
        self.resource_known = schema.resource_by_attribute
        self.extra_limit = schema.limits.max_text_bytes
        self.extra_prefix = schema.path_of("extra") + "."
        self.origin_prefix = schema.path_of("origin") + "."
        self.extra_keys: dict[tuple[str, ...], tuple[tuple[str, ...], bool]] = {}
        """The keys the schema does not name, and whether they are all ASCII, by the
        attribute keys they came in."""
        self.build = _compile_builder(schema)


@functools.cache
def _plan(schema: Schema) -> _Plan:
    return _Plan(schema)


# --- the document as generated code --------------------------------------------------------
#
# Where each value goes is the schema's: the fields' stored paths, and the stored paths and
# literal values of the record and derived fields, which the builder knows by role (see
# otel_audit.schema). A generic builder would look every one of them up, walk its parent
# objects and test options it does not have, for every document. Instead, _builder_source
# turns the schema into the source of one straight-line function with the paths, limits and
# values written in as constants, and _compile_builder compiles it once per schema.
#
# The function places each value at its path: the objects on the way live in locals,
# created on first use. The first values (timestamp, ids, ECS kind, dataset, ...) are one
# nested literal; the schema's fields follow in schema order (so documents keep their key
# order), each cut if the schema says so, noted as untrusted if clients supply it and
# copied as a normalized IP; then the related entities, the extra attributes, the resource
# fields, the trace context, the record's own fields and the receiver's findings. Two
# objects are written whole, replacing whatever a field put there: the related entities
# and the resource's origin (the native layout treats a value below them as a collision).


class _Source:
    """Generated lines that place values at stored paths.

    ``names`` holds the local of each object, ``known`` per open block the objects every
    way to this point has created (the rest are created on first use: a local is None until
    its object exists, and an object's parents exist before it).
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.indent = "    "
        self.names: dict[tuple[str, ...], str] = {(): "doc"}
        self.made: set[str] = set()
        """The locals the head assigns (the rest start as None)."""
        self.known: list[set[tuple[str, ...]]] = [set()]
        self.no_parent: set[tuple[str, ...]] = set()
        """Paths that hold a value, where the schema's fields may not open an object."""

    def line(self, text: str) -> None:
        self.lines.append(self.indent + text)

    @contextlib.contextmanager
    def block(self, header: str) -> Iterator[None]:
        self.line(header)
        outer = self.indent
        self.indent += "    "
        self.known.append(set(self.known[-1]))
        try:
            yield
        finally:
            self.known.pop()
            self.indent = outer

    def name(self, parents: tuple[str, ...]) -> str:
        return self.names.setdefault(parents, f"node_{len(self.names)}")

    def node(self, parents: tuple[str, ...], *, field: bool = False) -> str:
        """The local of the object at ``parents``, after the lines creating it if need be."""
        name = self.name(parents)
        if parents in self.known[-1]:
            return name
        if field and parents in self.no_parent:
            raise ValueError(f"schema stores a value at {'.'.join(parents)} and fields below it")
        self.line(f"if {name} is None:")
        self.indent += "    "
        above = self.node(parents[:-1], field=field)
        self.line(f"{name} = {above}[{parents[-1]!r}] = {{}}")
        self.indent = self.indent[:-4]
        self.known[-1].update(parents[:i] for i in range(len(parents) + 1))
        return name

    def put(self, path: tuple[str, ...], expr: str, *, field: bool = False) -> None:
        parent = self.node(path[:-1], field=field)
        self.line(f"{parent}[{path[-1]!r}] = {expr}")

    def replace(self, path: tuple[str, ...], expr: str) -> None:
        """Put the new object ``expr`` at ``path``, over whatever a field put there."""
        parent = self.node(path[:-1])
        self.line(f"{self.name(path)} = {parent}[{path[-1]!r}] = {expr}")
        for below, name in self.names.items():
            if len(below) > len(path) and below[: len(path)] == path:
                self.line(f"{name} = None")
                for known in self.known:
                    known.discard(below)
        self.known[-1].add(path)

    def get(self, path: tuple[str, ...]) -> str:
        """An expression of the value at ``path``, None when there is none."""
        name = self.name(path[:-1])
        if path[:-1] in self.known[-1]:
            return f"{name}.get({path[-1]!r})"
        return f"({name}.get({path[-1]!r}) if {name} is not None else None)"

    def absent(self, path: tuple[str, ...]) -> str:
        """An expression: True when ``path`` holds no value."""
        name = self.name(path[:-1])
        if path[:-1] in self.known[-1]:
            return f"{path[-1]!r} not in {name}"
        return f"({name} is None or {path[-1]!r} not in {name})"

    def head(self, items: list[tuple[tuple[str, ...], str]]) -> None:
        """Create the document holding ``items`` (path, expression) as nested literals, the
        objects' keys in item order."""
        tree: dict[str, Any] = {}
        for path, expr in items:
            node = tree
            for depth, key in enumerate(path[:-1]):
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise SchemaError(
                        f"schema stores a value at {'.'.join(path[: depth + 1])}"
                        f" and {'.'.join(path)} below it"
                    )
            if path[-1] in node:
                raise SchemaError(f"schema stores two values at {'.'.join(path)}")
            node[path[-1]] = expr
            self.no_parent.add(path)

        def emit(node: dict[str, Any], parents: tuple[str, ...]) -> str:
            members = []
            for key, value in node.items():
                if isinstance(value, dict):
                    value = emit(value, (*parents, key))
                members.append(f"{key!r}: {value}")
            name = self.name(parents)
            self.line(f"{name} = {{{', '.join(members)}}}")
            self.made.add(name)
            self.known[-1].add(parents)
            return name

        emit(tree, ())

    def function(self, signature: str) -> str:
        unset = [f"    {n} = None" for n in self.names.values() if n not in self.made]
        return "\n".join([f"def {signature}:", *unset, *self.lines]) + "\n"


def _object_of(schema: Schema, *roles: str) -> tuple[tuple[str, ...], list[str]]:
    """The path of the object the fields with ``roles`` are written in as one, and their
    keys in it."""
    paths = [_path(schema.path_of(role)) for role in roles]
    parents = {p[:-1] for p in paths}
    if len(parents) != 1 or () in parents:
        raise SchemaError(f"the fields with the roles {', '.join(roles)} are not in one object")
    return paths[0][:-1], [p[-1] for p in paths]


def _builder_source(schema: Schema) -> str:
    """Python source of ``build(record, received_ns, event_id, sha, cutter, plan)``, which
    returns :func:`build_document_for_write`'s answer."""

    def at(role: str) -> tuple[str, ...]:
        return _path(schema.path_of(role))

    def text(role: str, value: str) -> str:
        """``value``, a string of the record, cut to the limit of ``role``."""
        limit = schema.max_bytes_of(role)
        return (
            f"{value} if len({value}) * 4 <= {limit}"
            f" else cutter.text({value}, {limit}, {schema.path_of(role)!r})"
        )

    constant = schema.constant
    src = _Source()
    line, block, put = src.line, src.block, src.put
    event_id_attribute = schema.attribute_of("event_id")

    line("attrs = record.attributes")
    line("get = attrs.get")
    line(f"emitted_id = get({event_id_attribute!r})")
    with block("if event_id is None:"):
        line("emitted = isinstance(emitted_id, str) and emitted_id")
        line("event_id = emitted_id.lower() if emitted else None")
    emitter = constant("event_id_source.emitter")
    line(f"id_source = {emitter!r} if emitted_id else {constant('event_id_source.derived')!r}")
    with block("if event_id is None:"):
        line("event_id = derive_event_id(sha)")
    line("flags = []")
    line("ts = record.time_unix_nano")
    with block("if not ts:"):
        line("ts = record.observed_time_unix_nano")
        line(f"flags.append({constant('flags.no_event_time')!r})")
    line(f"category = attrs[{schema.attribute_of('category')!r}]")
    line(f"outcome = attrs[{schema.attribute_of('outcome')!r}]")
    line(f"action = attrs[{schema.attribute_of('action')!r}]")
    unknown = constant("ecs_outcome.default")
    line("timestamp = format_ns(ts)")
    src.head(
        [
            (at("timestamp"), "timestamp"),
            (at("event_id"), "event_id"),
            (at("kind"), repr(constant("kind"))),
            (at("ecs_category"), "list(ECS_CATEGORY.get(category, ()))"),
            (at("ecs_type"), "ecs_types(category, action, outcome)"),
            (at("ecs_outcome"), f"ECS_OUTCOME.get(outcome, {unknown!r})"),
            (at("dataset"), repr(constant("dataset"))),
            (at("ecs_version"), repr(constant("ecs_version"))),
            (at("ingested"), "format_ingested(received_ns)"),
            (at("schema_version"), repr(schema.version)),
            (at("event_id_source"), "id_source"),
            (at("content_hash"), "sha"),
        ]
    )
    with block("if record.observed_time_unix_nano:"):
        put(at("created"), "format_ns(record.observed_time_unix_nano)")

    line("untrusted = []")
    fields = [f for f in schema.fields if f.attribute != event_id_attribute]
    src.no_parent.update(_path(f.stored) for f in fields)
    # Fields whose stored value more is derived from, each held in a local once placed.
    copied = {a for f in fields for by_value in (f.actor_copies or {}).values() for a in by_value}
    kept = {f.attribute: f"field_{i}" for i, f in enumerate(fields) if f.related_user}
    kept |= {f.attribute: f"field_{i}" for i, f in enumerate(fields) if f.attribute in copied}
    kept |= {f.attribute: f"field_{i}" for i, f in enumerate(fields) if f.actor_copies}
    flag = {f.alias_default[0]: f"aliased_{i}" for i, f in enumerate(fields) if f.alias_default}
    """The local that says whether a field's value came from an alias, for the fields an
    ``alias_default`` reads (they come first in the schema)."""
    for f in fields:
        line(f"value = get({f.attribute!r})")
        local = kept.get(f.attribute)
        if local:
            line(f"{local} = None")
        if f.attribute in flag:
            line(f"{flag[f.attribute]} = False")
        if f.aliases:
            # A valid record has the attribute or else the first alias it holds.
            with block("if value is None:"):
                for n, alias in enumerate(f.aliases):
                    with block(f"{'if' if n == 0 else 'elif'} {alias!r} in attrs:"):
                        line(f"value = attrs[{alias!r}]")
                        if f.attribute in flag:
                            line(f"{flag[f.attribute]} = True")
        if f.alias_default:
            source, default = f.alias_default
            if source not in {g.attribute for g in fields[: fields.index(f)]}:
                raise SchemaError(f"{f.attribute}: alias_default reads {source}, a later field")
            with block(f"if value is None and {flag[source]}:"):
                line(f"value = {default!r}")
        if f.array:
            with block("if isinstance(value, list) and value:"):
                put(_path(f.stored), "list(value)", field=True)
                if local:
                    line(f"{local} = value")
            continue
        with block("if isinstance(value, str) and value != '':"):
            if f.oversize == "truncate" and f.max_bytes:
                with block(f"if len(value) * 4 > {f.max_bytes}:"):
                    line(f"value = cutter.text(value, {f.max_bytes}, {f.stored!r})")
            put(_path(f.stored), "value", field=True)
            if local:
                line(f"{local} = value")
            if f.client_supplied:
                line(f"untrusted.append({f.stored!r})")
            if f.ip_copy:
                line("ip = as_ip(value)")
                with block("if ip is not None:"):
                    for copy in f.ip_copy:
                        put(_path(copy), "ip", field=True)

    # An actor of some types is also stored where ECS looks for that kind of identity.
    for f in fields:
        if not f.actor_copies:
            continue
        for n, (kind, by_attribute) in enumerate(f.actor_copies.items()):
            with block(f"{'if' if n == 0 else 'elif'} {kept[f.attribute]} == {kind!r}:"):
                for attribute, stored in by_attribute.items():
                    src.no_parent.add(_path(stored))
                    with block(f"if {kept[attribute]} is not None:"):
                        put(_path(stored), kept[attribute], field=True)

    related, (user_key, ip_key) = _object_of(schema, "related_user", "related_ip")
    users = ", ".join(kept[f.attribute] for f in fields if f.related_user)
    line(f"related = {{{user_key!r}: sorted({{v for v in ({users},) if v}})}}")
    line(f"client_ip = {src.get(at('client_ip'))}")
    with block("if client_ip:"):
        line(f"related[{ip_key!r}] = [client_ip]")
    src.replace(related, "related")

    line("extra, plain = attribute_extras(attrs, plan, cutter)")
    with block("if extra:"):
        put(at("extra"), "extra")
    line("resource_values, origin, origin_plain = resource_part(record.resource, plan, cutter)")
    for i, rf in enumerate(schema.resource_fields):
        line(f"value = resource_values[{i}]")
        with block("if value is not None:"):
            put(_path(rf.stored), "value")
    origin, (origin_key,) = _object_of(schema, "origin")
    with block("if origin:"):
        src.replace(origin, f"{{{origin_key!r}: dict(origin)}}")

    with block("if record.trace_id:"):
        put(at("trace_id"), "record.trace_id")
        with block("if record.span_id:"):
            put(at("span_id"), "record.span_id")
        with block("if record.flags:"):
            put(at("trace_flags"), "int(record.flags) & 0xFF")
    with block("else:"):
        line(f"flags.append({constant('flags.no_trace')!r})")
    with block(f"if {src.absent(at('correlation_id'))} and record.trace_id:"):
        put(at("correlation_id"), "record.trace_id")

    # Short text cannot exceed a limit even at 4 bytes per char: only longer text is cut.
    line("level = record.severity_text")
    with block("if level:"):
        put(at("log_level"), text("log_level", "level"))
    max_body = schema.limits.max_body_bytes
    line("body = record.body")
    with block(f"if type(body) is str and len(body) * 4 <= {max_body}:"), block("if body:"):
        put(at("message"), "body")
    with block("else:"):
        line(f"message = body_text(body, cutter, {max_body}, {schema.path_of('message')!r})")
        with block("if message is not None:"):
            put(at("message"), "message")
    line("name = record.event_name")
    with block("if name:"):
        put(at("event_name"), text("event_name", "name"))
    line("scope_name = record.scope_name")
    line("scope_version = record.scope_version")
    with block("if scope_name or scope_version:"):
        put(at("scope_name"), text("scope_name", "scope_name"))
        put(at("scope_version"), text("scope_version", "scope_version"))

    line("skew_ns = received_ns - ts")
    with block(f"if abs(skew_ns) > {schema.limits.max_clock_skew_s * 1_000_000_000}:"):
        line(f"flags.append({constant('flags.clock_skew')!r})")
        put(at("clock_skew_ms"), "skew_ns // 1_000_000")
    with block("if untrusted:"):
        put(at("untrusted"), "untrusted")
    with block("if cutter.cut:"):
        put(at("truncated"), "cutter.cut")
    with block("if flags:"):
        put(at("flags"), "flags")
    line("return doc, plain and origin_plain, event_id, timestamp")
    return src.function("build(record, received_ns, event_id, sha, cutter, plan)")


def _compile_builder(schema: Schema) -> Any:
    source = _builder_source(schema)
    namespace: dict[str, Any] = {
        "ECS_CATEGORY": schema.ecs_category,
        "ECS_OUTCOME": schema.ecs_outcome,
        "ecs_types": schema.ecs_type.types,
        "as_ip": _as_ip,
        "attribute_extras": _attribute_extras,
        "body_text": _body_text,
        "derive_event_id": derive_event_id,
        "format_ingested": _format_ingested,
        "format_ns": format_ns,
        "resource_part": _resource_part,
    }
    exec(compile(source, f"<document builder of schema {schema.version}>", "exec"), namespace)
    return namespace["build"]


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
            v = out[k] = cutter.free(v, f"{plan.extra_prefix}{k}")
            if type(v) not in _PLAIN_FREE_TYPES:
                plain = False
    return out, plain


_Resource = tuple[tuple[str | None, ...], dict[str, Any], bool]
_last_resource: list[tuple[_Plan, tuple[tuple[str, Any], ...], _Resource]] = []
"""The plan and items of the last all-string resource with its share of the document: a
batch shares one."""


def _resource_part(resource: dict[str, Any], plan: _Plan, cutter: _Cutter) -> _Resource:
    """The value of each of the plan's resource fields (None when it stores none), the
    other values, and whether those are plain (see :func:`build_document_and_plainness`)."""
    items = tuple(resource.items())
    if _last_resource:
        seen_plan, seen, part = _last_resource[0]
        # Ordered items of str values: equal means the same stored values in the same order.
        if seen_plan is plan and seen == items:
            return part
    values: list[str | None] = []
    for attribute, alias in plan.resource_fields:
        rv = resource.get(attribute)
        if rv is None and alias:
            rv = resource.get(alias)
        values.append(rv if isinstance(rv, str) and rv else None)
    cuts = len(cutter.cut)
    origin = _free_values(
        resource, plan.resource_known, cutter, plan.origin_prefix, plan.extra_limit
    )
    plain = _PLAIN_FREE_TYPES.issuperset(map(type, origin.values())) and "".join(origin).isascii()
    part = (tuple(values), origin, plain)
    # Only an all-string resource with nothing cut is remembered: other values compare
    # equal across types (1 == True) or could change under the copy, and every document
    # must record its own cuts.
    if len(cutter.cut) == cuts and all(type(v) is str for _, v in items):
        _last_resource[:] = [(plan, items, part)]
    return part


def build_document(
    record: LogRecordData,
    *,
    received_ns: int,
    event_id: str | None = None,
    content_sha256: str | None = None,
    schema: Schema | None = None,
) -> dict[str, Any]:
    """The stored document for a validated record.

    ``event_id`` defaults to the record's event id attribute or, when absent, an id derived
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
    doc, plain, _, _ = build_document_for_write(
        record,
        received_ns=received_ns,
        event_id=event_id,
        content_sha256=content_sha256,
        schema=schema,
    )
    return doc, plain


def build_document_for_write(
    record: LogRecordData,
    *,
    received_ns: int,
    event_id: str | None = None,
    content_sha256: str | None = None,
    schema: Schema | None = None,
) -> tuple[dict[str, Any], bool, str, str]:
    """:func:`build_document_and_plainness`, with the document's event id and timestamp
    (the write's ``_id`` and what it reports), wherever the schema stores them."""
    schema = schema or load_schema()
    plan = _plan(schema)
    sha = content_sha256 or content_hash(record)
    built: tuple[dict[str, Any], bool, str, str]
    built = plan.build(record, received_ns, event_id, sha, _Cutter(schema), plan)
    return built


@functools.lru_cache(maxsize=4096)
def _path(stored: str) -> tuple[str, ...]:
    return tuple(stored.split("."))


@functools.lru_cache(maxsize=4096)
def _as_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        return None
