"""Elasticsearch index templates, derived from the audit schema: the one list of them.

Only composable index templates and plain mappings are used: they exist on the bare
Elasticsearch server and on every full distribution. Each template is a function of the
schema (and of :class:`~indexer.mappings.TemplateSettings`), so there is no second copy
of the field list. The events template is defined here; the dead-letter, span and block
templates beside their documents; :func:`registered_templates` lists all four, and
``otel-audit templates install`` (and the receiver at start) installs them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from indexer.deadletter import rejected_template
from indexer.indices import (
    BLOCKS_TEMPLATE,
    EVENTS_ALIAS,
    EVENTS_PATTERN,
    EVENTS_TEMPLATE,
    REJECTED_TEMPLATE,
    SPANS_TEMPLATE,
)
from indexer.integrity.blocks import blocks_template
from indexer.mappings import TemplateSettings, index_settings, insert_mapping, leaf_mapping
from indexer.spans import spans_template
from otel_audit.schema import Schema, load_schema

__all__ = [
    "TemplateSettings",
    "event_properties",
    "events_template",
    "install_templates",
    "registered_templates",
]


def event_properties(schema: Schema) -> dict[str, Any]:
    """Mapping properties of the stored event document."""
    props: dict[str, Any] = {}
    for f in schema.fields:
        leaf = leaf_mapping(f.type, f.max_bytes)
        if f.text_field:
            # ECS keywords that people also search by word carry a `text` sub-field.
            leaf = {**leaf, "fields": {"text": {"type": "text"}}}
        insert_mapping(props, f.stored, leaf)
        for copies in (f.actor_copies or {}).values():
            for attribute, stored in copies.items():
                source = schema.field(attribute)
                insert_mapping(props, stored, leaf_mapping(source.type, source.max_bytes))
    for rf in schema.resource_fields:
        insert_mapping(props, rf.stored, leaf_mapping(rf.type, rf.max_bytes))
    for rec in schema.record_fields:
        insert_mapping(props, rec["stored"], leaf_mapping(rec["type"]))
    for d in schema.derived_fields:
        insert_mapping(props, d["stored"], leaf_mapping(d["type"]))
    return props


def events_template(
    schema: Schema | None = None, settings: TemplateSettings | None = None
) -> dict[str, Any]:
    """The composable index template for ``audit-events-*``."""
    schema = schema or load_schema()
    settings = settings or TemplateSettings()
    return {
        "index_patterns": [EVENTS_PATTERN],
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
                # Every write request is fsynced before it is acknowledged.
                "index": {
                    **index_settings(settings),
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

TEMPLATES: dict[str, TemplateBuilder] = {
    BLOCKS_TEMPLATE: blocks_template,
    EVENTS_TEMPLATE: events_template,
    REJECTED_TEMPLATE: rejected_template,
    SPANS_TEMPLATE: lambda schema, settings: spans_template(schema, settings),
}
"""Every index template the project installs, by its Elasticsearch name."""


def registered_templates(
    schema: Schema | None = None, settings: TemplateSettings | None = None
) -> dict[str, dict[str, Any]]:
    """Every template's body, by its Elasticsearch name."""
    schema = schema or load_schema()
    settings = settings or TemplateSettings()
    return {name: build(schema, settings) for name, build in sorted(TEMPLATES.items())}


def install_templates(es: Any, settings: TemplateSettings | None = None) -> list[str]:
    """Install (create or update) every template; returns their names.

    ``es`` is a synchronous ``elasticsearch.Elasticsearch`` client.
    """
    installed = []
    for name, body in registered_templates(settings=settings).items():
        es.indices.put_index_template(name=name, **body)
        installed.append(name)
    return installed
