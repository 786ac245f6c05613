"""Validate one log record against the audit schema.

:func:`validate` returns every violation of a record, each naming the field and the rule it
breaks. It never raises, whatever the record holds: values of the wrong type, huge values,
control characters, cyclic or absurdly deep structures, missing resource attributes.

Rules (the ``rule`` of a :class:`Violation`):

``not_audit_event``   the record has no ``audit.action``: it is not an audit event
``required``          a required attribute is missing or empty
``type``              a schema attribute is not a string
``enum``              a value is not one of the allowed values
``pattern``           a value does not have the required form
``max_bytes``         an identifier is longer than its limit (identifiers are never cut)
``control_chars``     an identifier contains control characters
``attribute_key``     an attribute key is empty, too long, or contains control characters
``too_many``          more attributes or array items than the schema allows
``max_depth``         an attribute value is nested deeper than the schema allows
``time``              the event time is absurd (before the schema's min_time or too far ahead)
``encoding``          a string is not valid Unicode (a lone surrogate): it cannot be stored

The body is free-form, but its nesting, sizes, value types and encoding are checked like
those of extra attributes, so a valid record always has a storable document.
"""

from __future__ import annotations

import functools
import re
import time
from typing import Any, NamedTuple

from otel_audit.record import LogRecordData
from otel_audit.schema import AttributeField, Schema, load_schema

__all__ = ["Violation", "summarize", "validate"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEY_BAD = re.compile(r"[\x00-\x1f\x7f]|^\.|\.$|\.\.")


class Violation(NamedTuple):
    """One broken rule: the field it concerns, the rule's name, and words for people."""

    field: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def summarize(violations: list[Violation], limit: int = 3) -> str:
    """A short message naming the first ``limit`` violations, for OTLP error messages."""
    head = "; ".join(str(v) for v in violations[:limit])
    more = len(violations) - limit
    return f"{head} (+{more} more)" if more > 0 else head


def _utf8_len(value: str) -> int:
    # Fast path: ASCII length equals byte length; encode only when needed.
    if value.isascii():
        return len(value)
    return len(value.encode("utf-8", "surrogatepass"))


def _bad_unicode(value: str) -> bool:
    """True when ``value`` holds lone surrogates (possible from JSON escapes like \\ud800)."""
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _shown(value: str) -> str:
    """A value as messages quote it: its first 64 characters, ``...`` when longer, as
    Python's ``repr`` writes a string (the other languages' validators write it alike)."""
    return repr(value[:64] + ("..." if len(value) > 64 else ""))


def _check_string_field(
    f: AttributeField,
    value: Any,
    out: list[Violation],
    schema: Schema,
    name: str | None = None,
    *,
    required: str | None = None,
) -> str | None:
    """Check one string value of ``f`` (given as attribute ``name``: ``f``'s own or an
    alias); returns it when it is usable, else None."""
    name = name or f.attribute
    required = required or f.required
    if not isinstance(value, str):
        kind = type(value).__name__
        out.append(Violation(name, "type", schema.message("not_string", type=kind)))
        return None
    if value == "" or value.isspace():
        # resource_categories fields are judged against the category in _validate.
        if required in ("always", "derived"):
            out.append(Violation(name, "required", schema.message("empty")))
        return None
    if _bad_unicode(value):
        out.append(Violation(name, "encoding", schema.message("lone_surrogate")))
        return None
    if f.enum:
        if value not in f.enum:
            message = schema.message("enum", value=_shown(value), values=", ".join(f.enum))
            out.append(Violation(name, "enum", message))
        return value
    if f.oversize == "reject":
        size = _utf8_len(value)
        if size > f.max_bytes:
            message = schema.message("max_bytes", size=size, limit=f.max_bytes)
            out.append(Violation(name, "max_bytes", message))
            return None
        if f.type == "keyword" and _CONTROL.search(value):
            out.append(Violation(name, "control_chars", schema.message("control_chars")))
            return None
    if f.pattern is not None and not f.pattern.fullmatch(value):
        message = schema.message("pattern", value=_shown(value), pattern=f.pattern.pattern)
        out.append(Violation(name, "pattern", message))
    return value


def _check_field(
    f: AttributeField, value: Any, name: str, out: list[Violation], schema: Schema
) -> Any:
    """Check the value of ``f`` given as attribute ``name``; returns it when usable."""
    if not f.array:
        return _check_string_field(f, value, out, schema, name)
    if not isinstance(value, (list, tuple)):
        kind = type(value).__name__
        out.append(Violation(name, "type", schema.message("not_string_array", type=kind)))
        return None
    limit = schema.limits.max_array_items
    if len(value) > limit:
        message = schema.message("too_many_items", count=len(value), limit=limit)
        out.append(Violation(name, "too_many", message))
        return None
    before = len(out)
    for item in value:
        _check_string_field(f, item, out, schema, name, required="always")
        if len(out) > before:
            return None
    return value


def _check_key(key: Any, where: str, out: list[Violation], schema: Schema) -> bool:
    if not isinstance(key, str):
        out.append(Violation(where, "attribute_key", schema.message("key_not_string")))
        return False
    if _bad_unicode(key):
        out.append(Violation(where, "encoding", schema.message("key_encoding")))
        return False
    if key == "" or _utf8_len(key) > schema.limits.max_attribute_key_bytes or _KEY_BAD.search(key):
        shown = repr(key[:64])
        out.append(
            Violation(
                where + (f".{key[:64]}" if key else ""),
                "attribute_key",
                schema.message("key", key=shown, limit=schema.limits.max_attribute_key_bytes),
            )
        )
        return False
    return True


def _check_value(value: Any, where: str, depth: int, out: list[Violation], schema: Schema) -> None:
    """Walk a free-form value, bounded: depth, item counts, keys, types and encoding.

    ``depth`` counts containers: a scalar inside max_value_depth nested containers is fine.
    """
    limits = schema.limits
    if isinstance(value, str):
        if _bad_unicode(value):
            out.append(Violation(where, "encoding", schema.message("lone_surrogate")))
        return
    if isinstance(value, (dict, list, tuple)) and depth > limits.max_value_depth:
        message = schema.message("depth", limit=limits.max_value_depth)
        out.append(Violation(where, "max_depth", message))
        return
    if isinstance(value, dict):
        if len(value) > limits.max_array_items:
            message = schema.message(
                "too_many_keys", count=len(value), limit=limits.max_array_items
            )
            out.append(Violation(where, "too_many", message))
            return
        for k, v in value.items():
            if _check_key(k, where, out, schema):
                _check_value(v, f"{where}.{k}", depth + 1, out, schema)
            if len(out) > 50:
                return
    elif isinstance(value, (list, tuple)):
        if len(value) > limits.max_array_items:
            message = schema.message(
                "too_many_items", count=len(value), limit=limits.max_array_items
            )
            out.append(Violation(where, "too_many", message))
            return
        for item in value:
            _check_value(item, where, depth + 1, out, schema)
            if len(out) > 50:
                return
    elif value is None or isinstance(value, (bool, int, float, bytes)):
        return
    else:
        message = schema.message("unsupported_type", type=type(value).__name__)
        out.append(Violation(where, "type", message))


def validate(
    record: LogRecordData, *, now_ns: int | None = None, schema: Schema | None = None
) -> list[Violation]:
    """Return every violation of ``record`` against the schema (empty when valid)."""
    try:
        schema = schema or load_schema()
        if _plain_valid(record, now_ns, schema):
            return []
        return _validate(record, now_ns, schema)
    except RecursionError:
        return [Violation("attributes", "max_depth", _schema_message("too_deep_to_inspect"))]
    except Exception as exc:  # never raise into a caller on hostile input
        message = _schema_message("uninspectable", type=type(exc).__name__)
        return [Violation("record", "type", message)]


def _schema_message(name: str, /, **values: Any) -> str:
    return load_schema().message(name, **values)


def _validate(record: LogRecordData, now_ns: int | None, schema: Schema) -> list[Violation]:
    out: list[Violation] = []
    attrs = record.attributes
    if not isinstance(attrs, dict):
        return [Violation("attributes", "type", schema.message("attributes_not_mapping"))]
    marker = schema.marker_attribute
    if marker not in attrs:
        out.append(
            Violation(marker, "not_audit_event", schema.message("not_audit_event", marker=marker))
        )
        return out
    limits = schema.limits
    if len(attrs) > limits.max_attributes:
        message = schema.message(
            "attributes_too_many", count=len(attrs), limit=limits.max_attributes
        )
        out.append(Violation("attributes", "too_many", message))
        return out

    known = schema.by_attribute
    values: dict[str, Any] = {}
    used_aliases: set[str] = set()
    aliased: set[str] = set()
    """The fields an alias stands in for."""
    for f in schema.fields:
        if f.attribute in attrs:
            values[f.attribute] = _check_field(f, attrs[f.attribute], f.attribute, out, schema)
            continue
        alias = next((a for a in f.aliases if a in attrs), None)
        if alias is not None:
            used_aliases.add(alias)
            aliased.add(f.attribute)
            values[f.attribute] = _check_field(f, attrs[alias], alias, out, schema)
        elif f.required == "always" and not (f.alias_default and f.alias_default[0] in aliased):
            out.append(Violation(f.attribute, "required", schema.message("required")))

    category = values.get(schema.attribute_of("category"))
    if category in schema.resource_required_categories:
        for name in schema.resource_category_attributes:
            given = attrs.get(name)
            if given is None or (isinstance(given, str) and (given == "" or given.isspace())):
                message = schema.message("required_for_category", category=category)
                out.append(Violation(name, "required", message))

    for key, value in attrs.items():
        if key in known or key in used_aliases:
            continue
        if _check_key(key, "attributes", out, schema):
            _check_value(value, key, 1, out, schema)
        if len(out) > 50:
            break

    resource = record.resource
    if not isinstance(resource, dict):
        out.append(Violation("resource", "type", schema.message("resource_not_mapping")))
    else:
        if len(resource) > limits.max_resource_attributes:
            count, limit = len(resource), limits.max_resource_attributes
            message = schema.message("resource_too_many", count=count, limit=limit)
            out.append(Violation("resource", "too_many", message))
        for rf in schema.resource_fields:
            rv = resource.get(rf.attribute)
            if rv is None:
                if rf.required == "always":
                    message = schema.message("resource_required")
                    out.append(Violation(f"resource.{rf.attribute}", "required", message))
                continue
            if not isinstance(rv, str):
                message = schema.message("not_string", type=type(rv).__name__)
                out.append(Violation(f"resource.{rf.attribute}", "type", message))
            elif rf.required == "always" and (rv == "" or rv.isspace()):
                message = schema.message("empty")
                out.append(Violation(f"resource.{rf.attribute}", "required", message))
            elif _utf8_len(rv) > rf.max_bytes:
                message = schema.message("max_bytes", size=_utf8_len(rv), limit=rf.max_bytes)
                out.append(Violation(f"resource.{rf.attribute}", "max_bytes", message))
            elif _CONTROL.search(rv):
                message = schema.message("control_chars")
                out.append(Violation(f"resource.{rf.attribute}", "control_chars", message))
            elif _bad_unicode(rv):
                message = schema.message("resource_encoding")
                out.append(Violation(f"resource.{rf.attribute}", "encoding", message))
        for key, value in resource.items():
            if key in schema.resource_by_attribute:
                continue
            if _check_key(key, "resource", out, schema):
                _check_value(value, f"resource.{key}", 1, out, schema)

    if record.body is not None:
        _check_value(record.body, "body", 1, out, schema)
    _check_time(record, now_ns, out, schema)
    return out


def _check_time(
    record: LogRecordData, now_ns: int | None, out: list[Violation], schema: Schema
) -> None:
    ts = record.time_unix_nano or record.observed_time_unix_nano
    if not isinstance(ts, int) or isinstance(ts, bool):
        out.append(Violation("time_unix_nano", "type", schema.message("time_type")))
        return
    if ts == 0:
        out.append(Violation("time_unix_nano", "required", schema.message("time_missing")))
        return
    limits = schema.limits
    if ts < limits.min_time_unix_nano:
        min_date = schema.raw["limits"]["min_time"][:10]
        out.append(
            Violation("time_unix_nano", "time", schema.message("time_before", min_date=min_date))
        )
        return
    now = time.time_ns() if now_ns is None else now_ns
    if ts > now + limits.max_future_s * 1_000_000_000:
        message = schema.message("time_future", seconds=limits.max_future_s)
        out.append(Violation("time_unix_nano", "time", message))


# --- fast path ---------------------------------------------------------------------------
#
# Nearly every record is valid and plain: ASCII strings, scalar extras, known keys. For
# those, _plain_valid proves validity with cheap str methods (for ASCII text,
# isprintable() is exactly "no control characters" and the length is the byte size).
# Anything it is unsure of returns False, and _validate, the reference, then decides and
# words the violations, so both paths always agree.

_SCALARS = frozenset({int, float, bool, bytes, type(None)})
_good_keys: set[str] = set()
_GOOD_KEYS_MAX = 4096
_ok_resource: list[dict[str, Any]] = []
"""The last resource found valid (a copy): the records of a batch share their resource."""


class _Plan(NamedTuple):
    check_fields: Any
    """``check_fields(attrs) -> bool``: the schema's fields are certainly valid (generated)."""
    known: dict[str, Any]
    category: str
    resource_categories: frozenset[str]
    category_needs: tuple[str, ...]
    """The attributes a category in ``resource_categories`` requires."""
    resource_fields: tuple[tuple[str, bool, int], ...]
    resource_known: dict[str, Any]
    extra_keys: dict[tuple[Any, ...], tuple[Any, ...]]
    """Attribute key sequences whose keys are all plain, with the ones ``known`` lacks."""


@functools.cache
def _plan(schema: Schema) -> _Plan:
    return _Plan(
        check_fields=_compile_field_checker(schema),
        known=schema.by_attribute,
        category=schema.attribute_of("category"),
        resource_categories=schema.resource_required_categories,
        category_needs=schema.resource_category_attributes,
        resource_fields=tuple(
            (rf.attribute, rf.required == "always", rf.max_bytes) for rf in schema.resource_fields
        ),
        resource_known=schema.resource_by_attribute,
        extra_keys={},
    )


# The per-field checks of the fast path, as straight-line code with the schema's settings
# written in as constants: a loop over the fields' settings costs more than the checks.
# Each field's lines are the fast path's rule for it: an absent field is fine unless it is
# always required (an explicit None is never plain), a present one must be a str, then
# either in its enum, or ASCII, not blank, within max_bytes (printable for keywords) and
# matching its pattern.


def _field_checker_source(schema: Schema) -> tuple[str, dict[str, Any]]:
    """Python source of ``check_fields(attrs) -> bool`` and the constants it reads."""
    constants: dict[str, Any] = {}
    lines = ["def check_fields(attrs):", "    get = attrs.get"]
    for i, f in enumerate(schema.fields):
        name = repr(f.attribute)
        if f.array:
            # Arrays are rare: the reference checks them whenever one is given.
            present = " or ".join(repr(a) + " in attrs" for a in (f.attribute, *f.aliases))
            lines.append(f"    if {present}:")
            lines.append("        return False")
            continue
        lines.append(f"    value = get({name})")
        lines.append("    if value is None:")
        if f.required == "always":
            lines.append("        return False")
        else:
            # An explicit None, or an alias standing in: the reference decides.
            present = " or ".join(repr(a) + " in attrs" for a in (f.attribute, *f.aliases))
            lines.append(f"        if {present}:")
            lines.append("            return False")
        lines.append("    elif type(value) is not str:")
        lines.append("        return False")
        if f.enum:
            constants[f"ENUM_{i}"] = frozenset(f.enum)
            lines.append(f"    elif value not in ENUM_{i}:")
            lines.append("        return False")
            continue
        lines.append("    elif not value or not value.isascii() or value.isspace():")
        lines.append("        return False")
        if f.oversize == "reject" and f.max_bytes >= 0:
            printable = " or not value.isprintable()" if f.type == "keyword" else ""
            lines.append(f"    elif len(value) > {f.max_bytes}{printable}:")
            lines.append("        return False")
        if f.pattern is not None:
            constants[f"PATTERN_{i}"] = f.pattern
            lines.append(f"    elif not PATTERN_{i}.fullmatch(value):")
            lines.append("        return False")
    lines.append("    return True")
    return "\n".join(lines) + "\n", constants


def _compile_field_checker(schema: Schema) -> Any:
    source, namespace = _field_checker_source(schema)
    exec(compile(source, f"<field checks of schema {schema.version}>", "exec"), namespace)
    return namespace["check_fields"]


def _plain_key(key: Any, max_bytes: int) -> bool:
    if key in _good_keys:
        return True
    if (
        type(key) is not str
        or not key.isascii()
        or not 0 < len(key) <= max_bytes
        or not key.isprintable()
        or key[0] == "."
        or key[-1] == "."
        or ".." in key
    ):
        return False
    if len(_good_keys) >= _GOOD_KEYS_MAX:
        _good_keys.clear()
    _good_keys.add(key)
    return True


def _plain_extras(values: dict[str, Any], known: dict[str, Any], schema: Schema) -> bool:
    """True when the keys and values ``known`` does not name are certainly valid."""
    max_key = schema.limits.max_attribute_key_bytes
    for key, value in values.items():
        if key in known:
            continue
        if not _plain_key(key, max_key) or not _plain_value(key, value, schema):
            return False
    return True


def _plain_value(key: str, value: Any, schema: Schema) -> bool:
    """True when the value of a key the schema does not name is certainly valid."""
    kind = type(value)
    if kind is str:
        return bool(value.isascii())
    if kind in _SCALARS:
        return True
    scratch: list[Violation] = []
    _check_value(value, key, 1, scratch, schema)
    return not scratch


_EXTRA_KEYS_MAX = 1024


def _plain_attribute_extras(attrs: dict[str, Any], plan: _Plan, schema: Schema) -> bool:
    """``_plain_extras`` of the attributes, judging each key sequence's keys once."""
    # A service's records repeat the same keys in the same order. A sequence is remembered
    # only when every key in it is plain, and equal keys are what _good_keys accepts too.
    keys = tuple(attrs)
    extra = plan.extra_keys.get(keys)
    if extra is None:
        if not _plain_extras(attrs, plan.known, schema):
            return False
        known = plan.known
        if len(plan.extra_keys) >= _EXTRA_KEYS_MAX:
            plan.extra_keys.clear()
        plan.extra_keys[keys] = tuple(k for k in keys if k not in known)
        return True
    return all(_plain_value(key, attrs[key], schema) for key in extra)


def _plain_valid(record: LogRecordData, now_ns: int | None, schema: Schema) -> bool:
    """True only when ``record`` is certainly valid; False means "ask _validate"."""
    attrs = record.attributes
    if type(attrs) is not dict or len(attrs) > schema.limits.max_attributes:
        return False
    plan = _plan(schema)
    if not plan.check_fields(attrs):
        return False
    if attrs[plan.category] in plan.resource_categories:
        for name in plan.category_needs:
            if name not in attrs:
                return False
    if not _plain_attribute_extras(attrs, plan, schema):
        return False

    resource = record.resource
    if not (type(resource) is dict and _ok_resource and _ok_resource[0] == resource):
        if type(resource) is not dict or len(resource) > schema.limits.max_resource_attributes:
            return False
        for attribute, always, max_bytes in plan.resource_fields:
            rv = resource.get(attribute)
            if rv is None:
                if always or attribute in resource:
                    return False
                continue
            if (
                type(rv) is not str
                or not rv.isascii()
                or len(rv) > max_bytes
                or not rv.isprintable()
                or (always and (not rv or rv.isspace()))
            ):
                return False
        if not _plain_extras(resource, plan.resource_known, schema):
            return False
        # Only flat resources are remembered: a nested value could change under the copy.
        if all(type(v) is str or type(v) in _SCALARS for v in resource.values()):
            _ok_resource[:] = [dict(resource)]

    body = record.body
    if body is not None:
        if type(body) is str:
            if not body.isascii():
                return False
        elif type(body) not in _SCALARS:
            scratch: list[Violation] = []
            _check_value(body, "body", 1, scratch, schema)
            if scratch:
                return False

    ts = record.time_unix_nano or record.observed_time_unix_nano
    if type(ts) is not int or ts < schema.limits.min_time_unix_nano:
        return False
    now = time.time_ns() if now_ns is None else now_ns
    return bool(ts <= now + schema.limits.max_future_s * 1_000_000_000)
