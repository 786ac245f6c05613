"""Elasticsearch index templates, derived from the audit schema: the one list of them.

Only composable index templates and plain mappings are used: they exist on the bare
Elasticsearch server and on every full distribution. Each template is a function of the
schema (and of :class:`~indexer.mappings.TemplateSettings`), so there is no second copy
of the field list. The events template is defined here; the dead-letter, span and block
templates beside their documents; :func:`registered_templates` lists all four, and
``otel-audit templates install`` (and the receiver at start) installs them.

Every installed template carries ``version`` (the project version as an integer) and
``_meta`` with ``otel_audit_version`` and ``content_hash``, the SHA-256 of its content in
the form the cluster answers it with. Installing never silently overwrites: a template
whose stored content no longer matches its hash was changed by an operator, one with a
greater version came from a newer release; both are refused by name
(:class:`TemplateConflict`) unless forced. An identical template is left alone.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Mapping
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
from otel_audit import __version__
from otel_audit.schema import Schema, load_schema

__all__ = [
    "TemplateConflict",
    "TemplateSettings",
    "content_hash",
    "event_properties",
    "events_template",
    "install_templates",
    "plan_install",
    "registered_templates",
    "stamped",
    "template_version",
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


def template_version(project_version: str = __version__) -> int:
    """The ``version`` every template carries: the project version as one integer
    (``1.2.3`` -> 1002003), so a newer release's templates compare greater."""
    parts = [int(p) for p in re.findall(r"[0-9]+", project_version)[:3]]
    parts += [0] * (3 - len(parts))
    return parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2]


def _normalized(body: Mapping[str, Any]) -> dict[str, Any]:
    """A template body in the form Elasticsearch answers it with: settings flattened to
    dotted keys with string values, no empty ``composed_of``, no content hash."""
    out = copy.deepcopy(dict(body))
    if not out.get("composed_of"):
        out.pop("composed_of", None)
    meta = dict(out.get("_meta") or {})
    meta.pop("content_hash", None)
    out["_meta"] = meta
    template = dict(out.get("template") or {})
    if "settings" in template:
        template["settings"] = _flat(template["settings"])
    out["template"] = template
    return out


def _flat(node: Any, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if not path.startswith("index."):
            path = "index." + path
        if isinstance(value, Mapping):
            flat.update(_flat(value, path + "."))
        elif isinstance(value, bool):
            flat[path] = "true" if value else "false"
        elif isinstance(value, list):
            flat[path] = json.dumps([str(v) for v in value])
        else:
            flat[path] = str(value)
    return flat


def content_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a template body's content, equal for what we send and what the
    cluster answers back, different once anyone edits the stored template."""
    canonical = json.dumps(_normalized(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def stamped(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with the project's ``version`` and ``_meta`` (project version, hash)."""
    out = copy.deepcopy(dict(body))
    out["version"] = template_version()
    out["_meta"] = {**(out.get("_meta") or {}), "otel_audit_version": __version__}
    out["_meta"]["content_hash"] = content_hash(out)
    return out


class TemplateConflict(Exception):
    """Installing would overwrite a newer or operator-changed template; the message names
    each one and what to do."""

    def __init__(self, conflicts: Mapping[str, str]) -> None:
        self.conflicts = dict(conflicts)
        super().__init__(
            "; ".join(f"{name}: {why}" for name, why in sorted(conflicts.items()))
            + " (run `otel-audit templates install --force` to overwrite)"
        )


def plan_install(
    name: str, ours: Mapping[str, Any], existing: Mapping[str, Any] | None
) -> tuple[str, str]:
    """What installing ``ours`` over the cluster's ``existing`` template does:
    (``create`` | ``update`` | ``unchanged`` | ``refuse``, why)."""
    if existing is None:
        return "create", "not on the cluster"
    theirs_meta = existing.get("_meta") or {}
    if content_hash(existing) == ours["_meta"]["content_hash"]:
        return "unchanged", "the cluster has exactly this template"
    their_version = existing.get("version")
    stored_hash = theirs_meta.get("content_hash")
    if stored_hash is not None and stored_hash != content_hash(existing):
        return "refuse", (
            f"template {name} was changed on the cluster after otel-audit "
            f"{theirs_meta.get('otel_audit_version', '?')} installed it (its content no longer "
            "matches its _meta.content_hash); refusing to overwrite the change"
        )
    if isinstance(their_version, int) and their_version > ours["version"]:
        return "refuse", (
            f"template {name} on the cluster is version {their_version} (otel-audit "
            f"{theirs_meta.get('otel_audit_version', '?')}), newer than this release's "
            f"{ours['version']} ({__version__}); refusing to downgrade it"
        )
    return "update", "older or settings changed"


def install_templates(
    es: Any, settings: TemplateSettings | None = None, *, force: bool = False
) -> list[str]:
    """Install every template that is missing or older; returns the names created or
    updated. Raises :class:`TemplateConflict` (after installing the others) when a
    template on the cluster is newer or was changed by hand, unless ``force``.

    ``es`` is a synchronous ``elasticsearch.Elasticsearch`` client.
    """
    installed = []
    conflicts: dict[str, str] = {}
    for name, body in registered_templates(settings=settings).items():
        ours = stamped(body)
        action, why = plan_install(name, ours, _existing(es, name))
        if action == "refuse" and not force:
            conflicts[name] = why
            continue
        if action == "unchanged":
            continue
        es.indices.put_index_template(name=name, **ours)
        installed.append(name)
    if conflicts:
        raise TemplateConflict(conflicts)
    return installed


def _existing(es: Any, name: str) -> dict[str, Any] | None:
    from elasticsearch import NotFoundError

    try:
        resp = es.indices.get_index_template(name=name)
    except NotFoundError:
        return None
    found = resp.get("index_templates") or []
    return dict(found[0]["index_template"]) if found else None
