"""The audit schema, loaded once from ``audit_event.v1.json``.

This is the only place that reads the schema file. The validator, the document builder
(in Python and, through ``receiver.ingest.prepare``, in the native extension), the
Elasticsearch index template, the emit helper and ``docs/schema.md`` all derive from the
objects defined here.

Roles. The code that builds a stored document has to know what some fields *mean*: which
attribute is the category, where the timestamp goes, which value marks a record without
trace context. It knows them by *role*, a stable identifier the schema gives an entry of
``fields``, ``record_fields`` or ``derived_fields`` (``"role": "timestamp"``); the stored
path, the attribute name and any literal value are the schema's (:meth:`Schema.path_of`,
:meth:`Schema.attribute_of`, :meth:`Schema.constant`). A derived field stores a
``value`` (always the same), a ``default`` (when nothing maps), or one of its ``values``,
each with its own role: those are the schema's constants, keyed ``role``,
``role.default`` and ``role.value_role`` (``flags.no_trace``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, TypeVar

__all__ = [
    "SCHEMA_FILE",
    "AttributeField",
    "EcsTypeRules",
    "Limits",
    "ResourceField",
    "Schema",
    "SchemaError",
    "load_schema",
]

SCHEMA_FILE = "audit_event.v1.json"

_T = TypeVar("_T")


class SchemaError(ValueError):
    """The schema lacks what a consumer needs, or contradicts itself."""


@dataclass(frozen=True, slots=True)
class AttributeField:
    """One LogRecord attribute named by the wire contract."""

    attribute: str
    param: str
    stored: str
    type: str
    required: str  # always | optional | resource_categories | derived
    oversize: str  # reject | truncate
    max_bytes: int
    description: str
    example: str
    enum: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    client_supplied: bool = False
    ip_copy: tuple[str, ...] = ()
    role: str = ""
    array: bool = False
    """The value is an array of strings, each held to the rules a string value is."""
    aliases: tuple[str, ...] = ()
    """OpenTelemetry attributes that supply the value when this attribute is absent (the
    first present one); they are also kept among the extra attributes, as sent."""
    related_user: bool = False
    """The value is also listed in ECS ``related.user``."""
    text_field: bool = False
    """A keyword also indexed as words (the ``text`` sub-field)."""
    alias_default: tuple[str, str] | None = None
    """(field, value): when this attribute is absent and ``field``'s value came from one of
    its aliases, the value is this one (an actor named by ``user.id`` is a user)."""
    actor_copies: dict[str, dict[str, str]] | None = None
    """Per value of this field, the attributes whose stored values are copied to more
    stored paths (a service actor is also ECS ``service.origin.*``)."""

    @property
    def stored_path(self) -> tuple[str, ...]:
        return tuple(self.stored.split("."))


@dataclass(frozen=True, slots=True)
class ResourceField:
    """One resource attribute the schema maps to a stored field."""

    attribute: str
    stored: str
    type: str
    required: str
    max_bytes: int
    description: str
    alias: str = ""
    """An older attribute name, read when this one is absent."""


@dataclass(frozen=True, slots=True)
class EcsTypeRules:
    """How ECS ``event.type`` follows from an event's category, action and outcome.

    The verb is the action's last segment or, when that names no type, the segment's last
    word after ``_``. The types are the verb's type when the category allows it, then the
    category's types for the outcome; when that leaves none, the category's default.
    """

    verb_types: dict[str, str]
    """verb -> ECS event type"""
    category_verbs: dict[str, frozenset[str]]
    """category -> the verb types it allows"""
    category_outcomes: dict[str, dict[str, tuple[str, ...]]]
    category_default: dict[str, tuple[str, ...]]

    def types(self, category: str, action: str, outcome: str) -> list[str]:
        """The ECS event types of an event (a new list)."""
        out: list[str] = []
        allowed = self.category_verbs.get(category, frozenset())
        last = action.rsplit(".", 1)[-1]
        verb_type = self.verb_types.get(last)
        if verb_type is None:
            verb_type = self.verb_types.get(last.rsplit("_", 1)[-1])
        if verb_type is not None and verb_type in allowed:
            out.append(verb_type)
        for t in self.category_outcomes.get(category, {}).get(outcome, ()):
            if t not in out:
                out.append(t)
        return out or list(self.category_default.get(category, ()))

    def all_types(self, category: str) -> set[str]:
        """Every type an event of ``category`` can get."""
        found = set(self.category_verbs.get(category, ())) | set(
            self.category_default.get(category, ())
        )
        for types in self.category_outcomes.get(category, {}).values():
            found.update(types)
        return found


@dataclass(frozen=True, slots=True)
class Limits:
    """Size and time limits, in the units their names carry."""

    max_attributes: int
    max_resource_attributes: int
    max_keyword_bytes: int
    max_text_bytes: int
    max_body_bytes: int
    max_attribute_key_bytes: int
    max_value_depth: int
    max_array_items: int
    max_clock_skew_s: int
    max_future_s: int
    min_time_unix_nano: int


@dataclass(frozen=True, slots=True, eq=False)
class Schema:
    """The parsed schema with lookup tables built once."""

    name: str
    version: str
    description: str
    marker_attribute: str
    limits: Limits
    fields: tuple[AttributeField, ...]
    resource_fields: tuple[ResourceField, ...]
    record_fields: tuple[dict[str, Any], ...]
    derived_fields: tuple[dict[str, Any], ...]
    resource_required_categories: frozenset[str]
    severity: dict[str, int]
    ecs_category: dict[str, tuple[str, ...]]
    ecs_outcome: dict[str, str]
    truncation_marker: str
    messages: dict[str, str]
    """The validator's message templates by key (``str.format`` fields), which every
    language's validator fills in the same way."""
    value_type_names: dict[str, str]
    """The name messages give each OTLP value kind (``got int``)."""
    ecs_type: EcsTypeRules
    raw: dict[str, Any]
    by_attribute: dict[str, AttributeField]
    resource_by_attribute: dict[str, ResourceField]
    paths: dict[str, str]
    """The stored path of every role."""
    attributes: dict[str, str]
    """The attribute of every role of an attribute field."""
    constants: dict[str, str]
    """The literal values derived fields store (see the module docstring for the keys)."""
    role_max_bytes: dict[str, int]
    """The size limit of the record fields that have one, by role."""
    resource_category_attributes: tuple[str, ...]
    """The attributes required when the category is in ``resource_required_categories``."""

    def field(self, attribute: str) -> AttributeField:
        return self.by_attribute[attribute]

    def message(self, name: str, /, **values: Any) -> str:
        """The validator's message ``name`` with ``values`` filled in."""
        return self.messages[name].format(**values)

    @property
    def alias_attributes(self) -> dict[str, str]:
        """Every alias attribute -> the field attribute it stands in for."""
        return {a: f.attribute for f in self.fields for a in f.aliases}

    def path_of(self, role: str) -> str:
        """The stored path of the field with ``role``."""
        return _lookup(self.paths, role, "no field has the role")

    def attribute_of(self, role: str) -> str:
        """The attribute of the field with ``role``."""
        return _lookup(self.attributes, role, "no attribute field has the role")

    def constant(self, key: str) -> str:
        """A literal value the schema gives a derived field (``kind``, ``flags.no_trace``)."""
        return _lookup(self.constants, key, "the schema has no constant")

    def max_bytes_of(self, role: str) -> int:
        """The size limit of the record field with ``role``."""
        return _lookup(self.role_max_bytes, role, "no record field with a limit has the role")


def _lookup(table: dict[str, _T], key: str, missing: str) -> _T:
    try:
        return table[key]
    except KeyError:
        raise SchemaError(f"{missing} {key}") from None


def _roles(
    fields: tuple[AttributeField, ...],
    record_fields: tuple[dict[str, Any], ...],
    derived_fields: tuple[dict[str, Any], ...],
) -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, int]]:
    """(paths, attributes, constants, role_max_bytes) by role: see the module docstring."""
    paths: dict[str, str] = {}
    entries: list[tuple[str, str, dict[str, Any]]] = [
        (f.role, f.stored, {}) for f in fields if f.role
    ]
    entries += [(e["role"], e["stored"], e) for e in record_fields + derived_fields if "role" in e]
    constants: dict[str, str] = {}
    max_bytes: dict[str, int] = {}
    for role, stored, entry in entries:
        if role in paths:
            raise SchemaError(f"two fields have the role {role}")
        paths[role] = stored
        if "value" in entry:
            constants[role] = str(entry["value"])
        if "default" in entry:
            constants[f"{role}.default"] = str(entry["default"])
        for value in entry.get("values", ()):
            key = f"{role}.{value['role']}"
            if key in constants:
                raise SchemaError(f"two values of {stored} have the role {value['role']}")
            constants[key] = str(value["value"])
        if "max_bytes" in entry:
            max_bytes[role] = int(entry["max_bytes"])
    attributes = {f.role: f.attribute for f in fields if f.role}
    return paths, attributes, constants, max_bytes


def _parse(raw: dict[str, Any]) -> Schema:
    limits_raw = raw["limits"]
    min_time = datetime.fromisoformat(limits_raw["min_time"].replace("Z", "+00:00"))
    limits = Limits(
        max_attributes=int(limits_raw["max_attributes"]),
        max_resource_attributes=int(limits_raw["max_resource_attributes"]),
        max_keyword_bytes=int(limits_raw["max_keyword_bytes"]),
        max_text_bytes=int(limits_raw["max_text_bytes"]),
        max_body_bytes=int(limits_raw["max_body_bytes"]),
        max_attribute_key_bytes=int(limits_raw["max_attribute_key_bytes"]),
        max_value_depth=int(limits_raw["max_value_depth"]),
        max_array_items=int(limits_raw["max_array_items"]),
        max_clock_skew_s=int(limits_raw["max_clock_skew_s"]),
        max_future_s=int(limits_raw["max_future_s"]),
        min_time_unix_nano=int(min_time.timestamp()) * 1_000_000_000,
    )
    fields: list[AttributeField] = []
    ecs_category: dict[str, tuple[str, ...]] = {}
    ecs_outcome: dict[str, str] = {}
    for f in raw["fields"]:
        default_max = limits.max_text_bytes if f["type"] == "text" else limits.max_keyword_bytes
        fields.append(
            AttributeField(
                attribute=f["attribute"],
                param=f["param"],
                stored=f["stored"],
                type=f["type"],
                required=f["required"],
                oversize=f["oversize"],
                max_bytes=int(f.get("max_bytes", default_max)),
                description=f["description"],
                example=f.get("example", ""),
                enum=tuple(f.get("enum", ())),
                pattern=re.compile(f["pattern"]) if "pattern" in f else None,
                client_supplied=bool(f.get("client_supplied", False)),
                ip_copy=tuple(f.get("ip_copy", ())),
                role=f.get("role", ""),
                array=bool(f.get("array", False)),
                aliases=tuple(f.get("aliases", ())),
                related_user=bool(f.get("related_user", False)),
                text_field=bool(f.get("text_field", False)),
                alias_default=(
                    (f["alias_default"]["field"], f["alias_default"]["value"])
                    if "alias_default" in f
                    else None
                ),
                actor_copies=(
                    {k: dict(v) for k, v in f["actor_copies"].items()}
                    if "actor_copies" in f
                    else None
                ),
            )
        )
        if "ecs_category" in f:
            ecs_category = {k: tuple(v) for k, v in f["ecs_category"].items()}
        if "ecs_outcome" in f:
            ecs_outcome = dict(f["ecs_outcome"])
    resource_fields = tuple(
        ResourceField(
            attribute=f["attribute"],
            stored=f["stored"],
            type=f["type"],
            required=f["required"],
            max_bytes=int(f.get("max_bytes", limits.max_keyword_bytes)),
            description=f["description"],
            alias=f.get("alias", ""),
        )
        for f in raw["resource_fields"]
    )
    record_fields = tuple(raw["record_fields"])
    derived_fields = tuple(raw["derived_fields"])
    paths, attributes, constants, role_max_bytes = _roles(
        tuple(fields), record_fields, derived_fields
    )
    ecs_type = _ecs_type_rules(derived_fields)
    return Schema(
        name=raw["name"],
        version=str(raw["version"]),
        description=raw["description"],
        marker_attribute=raw["marker_attribute"],
        limits=limits,
        fields=tuple(fields),
        resource_fields=resource_fields,
        record_fields=record_fields,
        derived_fields=derived_fields,
        resource_required_categories=frozenset(raw["resource_required_categories"]),
        severity={k: int(v) for k, v in raw["severity"].items()},
        ecs_category=ecs_category,
        ecs_outcome=ecs_outcome,
        truncation_marker=raw["truncation_marker"],
        messages=dict(raw["messages"]),
        value_type_names=dict(raw["value_type_names"]),
        ecs_type=ecs_type,
        raw=raw,
        by_attribute={f.attribute: f for f in fields},
        resource_by_attribute={f.attribute: f for f in resource_fields},
        paths=paths,
        attributes=attributes,
        constants=constants,
        role_max_bytes=role_max_bytes,
        resource_category_attributes=tuple(
            f.attribute for f in fields if f.required == "resource_categories"
        ),
    )


def _ecs_type_rules(derived_fields: tuple[dict[str, Any], ...]) -> EcsTypeRules:
    entry = next((d for d in derived_fields if d.get("role") == "ecs_type"), None)
    if entry is None:
        raise SchemaError("no derived field has the role ecs_type")
    verb_types: dict[str, str] = {}
    for kind, verbs in entry["verbs"].items():
        for verb in verbs:
            if verb in verb_types:
                raise SchemaError(f"the verb {verb} has two ECS event types")
            verb_types[verb] = kind
    categories = entry["categories"]
    return EcsTypeRules(
        verb_types=verb_types,
        category_verbs={c: frozenset(r.get("verbs", ())) for c, r in categories.items()},
        category_outcomes={
            c: {o: tuple(t) for o, t in r.get("outcomes", {}).items()}
            for c, r in categories.items()
        },
        category_default={c: tuple(r["default"]) for c, r in categories.items()},
    )


@cache
def load_schema() -> Schema:
    """Return the (cached) audit schema v1."""
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return _parse(json.loads(text))
