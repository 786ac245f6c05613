"""Elasticsearch index templates, derived from the audit schema.

Only composable index templates and plain mappings are used: they exist on the bare
Elasticsearch server and on every full distribution. Each template is a function of the
schema (and a few deployment settings) so there is no second copy of the field list.

Templates other modules own register themselves with :func:`register_template`; the
``otel-audit templates install`` command installs every registered one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from otel_audit.document import EVENTS_INDEX_PREFIX
from otel_audit.schema import Schema, load_schema

__all__ = [
    "EVENTS_ALIAS",
    "TemplateSettings",
    "events_template",
    "install_templates",
    "register_template",
    "registered_templates",
]

EVENTS_ALIAS = "audit-events"
TEMPLATE_PREFIX = "otel-audit-"


@dataclass(frozen=True, slots=True)
class TemplateSettings:
    """Deployment knobs that belong in index settings, not in the schema."""

    number_of_shards: int = 1
    number_of_replicas: int = 0
    refresh_interval_s: float = 1.0


def _leaf_mapping(kind: str, max_bytes: int | None = None) -> dict[str, Any]:
    if kind == "keyword":
        return {"type": "keyword", "ignore_above": max_bytes or 1024}
    if kind == "text":
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}}
    if kind == "date_nanos":
        return {"type": "date_nanos"}
    if kind == "ip":
        return {"type": "ip"}
    if kind == "long":
        return {"type": "long"}
    if kind == "flattened":
        return {"type": "flattened", "ignore_above": 1024, "depth_limit": 20}
    raise ValueError(f"schema type {kind!r} has no mapping")


def _insert(props: dict[str, Any], dotted: str, leaf: dict[str, Any]) -> None:
    parts = dotted.split(".")
    node = props
    for part in parts[:-1]:
        holder = node.setdefault(part, {"properties": {}})
        if "properties" not in holder:
            raise ValueError(f"{dotted}: {part} is both a leaf and an object")
        node = holder["properties"]
    if parts[-1] in node:
        if node[parts[-1]] != leaf:
            raise ValueError(f"{dotted} is mapped twice with different types")
        return
    node[parts[-1]] = leaf


def event_properties(schema: Schema) -> dict[str, Any]:
    """Mapping properties of the stored event document."""
    props: dict[str, Any] = {}
    for f in schema.fields:
        _insert(props, f.stored, _leaf_mapping(f.type, f.max_bytes))
    for rf in schema.resource_fields:
        _insert(props, rf.stored, _leaf_mapping(rf.type, rf.max_bytes))
    for rec in schema.record_fields:
        _insert(props, rec["stored"], _leaf_mapping(rec["type"]))
    for d in schema.derived_fields:
        _insert(props, d["stored"], _leaf_mapping(d["type"]))
    return props


def events_template(
    schema: Schema | None = None, settings: TemplateSettings | None = None
) -> dict[str, Any]:
    """The composable index template for ``audit-events-*``."""
    schema = schema or load_schema()
    settings = settings or TemplateSettings()
    return {
        "index_patterns": [EVENTS_INDEX_PREFIX + "*"],
        "priority": 200,
        "version": int(schema.version),
        "_meta": {
            "description": "otel-audit stored audit events",
            "schema": schema.name,
            "schema_version": schema.version,
        },
        "template": {
            "aliases": {EVENTS_ALIAS: {}},
            "settings": {
                "index": {
                    "number_of_shards": settings.number_of_shards,
                    "number_of_replicas": settings.number_of_replicas,
                    "refresh_interval": f"{settings.refresh_interval_s:g}s",
                    # Every write request is fsynced before it is acknowledged.
                    "translog": {"durability": "request"},
                    "sort": {"field": "@timestamp", "order": "desc"},
                }
            },
            "mappings": {
                # The receiver builds every document: anything unexpected is a bug to
                # surface as a mapping error (dead-lettered), not a field to invent.
                "dynamic": "strict",
                "date_detection": False,
                "properties": event_properties(schema),
            },
        },
    }


TemplateBuilder = Callable[[Schema, TemplateSettings], dict[str, Any]]
_REGISTRY: dict[str, TemplateBuilder] = {
    TEMPLATE_PREFIX + "events": lambda schema, settings: events_template(schema, settings),
}


def register_template(name: str, builder: TemplateBuilder) -> None:
    """Add a template (``otel-audit-<name>``) to what :func:`install_templates` installs."""
    _REGISTRY[TEMPLATE_PREFIX + name] = builder


def registered_templates(
    schema: Schema | None = None, settings: TemplateSettings | None = None
) -> dict[str, dict[str, Any]]:
    """Every registered template, by its Elasticsearch name."""
    schema = schema or load_schema()
    settings = settings or TemplateSettings()
    _import_owners()
    return {name: build(schema, settings) for name, build in sorted(_REGISTRY.items())}


# Modules that register templates of their own when imported.
TEMPLATE_OWNERS: tuple[str, ...] = (
    "receiver.spans",
    "indexer.deadletter",
    "indexer.integrity.blocks",
)


def _import_owners() -> None:
    import importlib

    for module in TEMPLATE_OWNERS:
        importlib.import_module(module)


def install_templates(es: Any, settings: TemplateSettings | None = None) -> list[str]:
    """Install (create or update) every registered template; returns their names.

    ``es`` is a synchronous ``elasticsearch.Elasticsearch`` client.
    """
    installed = []
    for name, body in registered_templates(settings=settings).items():
        es.indices.put_index_template(name=name, **body)
        installed.append(name)
    return installed
