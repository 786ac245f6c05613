"""The audit schema, loaded once from ``audit_event.v1.json``.

This is the only place that reads the schema file. The validator, the document builder,
the Elasticsearch index template, the emit helper and ``docs/schema.md`` all derive from the
objects defined here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "SCHEMA_FILE",
    "AttributeField",
    "Limits",
    "ResourceField",
    "Schema",
    "load_schema",
]

SCHEMA_FILE = "audit_event.v1.json"


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
    record_fields: tuple[dict[str, str], ...]
    derived_fields: tuple[dict[str, str], ...]
    resource_required_categories: frozenset[str]
    severity: dict[str, int]
    ecs_category: dict[str, tuple[str, ...]]
    ecs_outcome: dict[str, str]
    truncation_marker: str
    raw: dict[str, Any]
    by_attribute: dict[str, AttributeField]
    resource_by_attribute: dict[str, ResourceField]

    def field(self, attribute: str) -> AttributeField:
        return self.by_attribute[attribute]


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
        )
        for f in raw["resource_fields"]
    )
    return Schema(
        name=raw["name"],
        version=str(raw["version"]),
        description=raw["description"],
        marker_attribute=raw["marker_attribute"],
        limits=limits,
        fields=tuple(fields),
        resource_fields=resource_fields,
        record_fields=tuple(raw["record_fields"]),
        derived_fields=tuple(raw["derived_fields"]),
        resource_required_categories=frozenset(raw["resource_required_categories"]),
        severity={k: int(v) for k, v in raw["severity"].items()},
        ecs_category=ecs_category,
        ecs_outcome=ecs_outcome,
        truncation_marker=raw["truncation_marker"],
        raw=raw,
        by_attribute={f.attribute: f for f in fields},
        resource_by_attribute={f.attribute: f for f in resource_fields},
    )


@cache
def load_schema() -> Schema:
    """Return the (cached) audit schema v1."""
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return _parse(json.loads(text))
