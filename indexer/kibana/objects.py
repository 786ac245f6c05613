"""The Kibana saved objects otel-audit ships: data views, saved searches, a dashboard.

They are built here, from the audit schema (stored field names, enum values) and the index
naming, rather than kept as a hand-edited export: a renamed stored field or a new outcome
changes the objects too. ``kibana/otel-audit.ndjson`` is the rendered file (Stack
Management > Saved objects > Import accepts it as is); ``otel-audit kibana render`` writes
it and a test fails when it is stale. ``otel-audit kibana import`` sends these objects.

The format is Kibana 8.x's saved-object export: one JSON object per line with ``type``,
``id``, ``attributes`` (with the JSON-encoded strings Kibana stores: ``fieldFormatMap``,
``runtimeFieldMap``, ``searchSourceJSON``, ``panelsJSON``) and ``references``. Every id is
fixed, so importing again with ``overwrite=true`` replaces the objects instead of adding
copies. Dashboard charts are Lens visualizations stored by value inside ``panelsJSON``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from indexer.indices import EVENTS_PATTERN, REJECTED_PATTERN, SPANS_PATTERN
from otel_audit.schema import Schema, load_schema

__all__ = [
    "APM_LINK_FIELD",
    "DASHBOARD_ID",
    "EVENTS_VIEW_ID",
    "REJECTED_VIEW_ID",
    "SEARCH_AUTH_FAILURES_ID",
    "SEARCH_FAILED_DENIED_ID",
    "SEARCH_PERMISSION_CHANGES_ID",
    "SEARCH_REJECTED_ID",
    "SPANS_VIEW_ID",
    "DataView",
    "data_views",
    "render_ndjson",
    "saved_objects",
]

EVENTS_VIEW_ID = "otel-audit-events"
REJECTED_VIEW_ID = "otel-audit-rejected"
SPANS_VIEW_ID = "otel-audit-spans"
SEARCH_FAILED_DENIED_ID = "otel-audit-failed-denied"
SEARCH_PERMISSION_CHANGES_ID = "otel-audit-permission-changes"
SEARCH_AUTH_FAILURES_ID = "otel-audit-authentication-failures"
SEARCH_REJECTED_ID = "otel-audit-rejected-records"
DASHBOARD_ID = "otel-audit-overview"


TRACE_ID_FIELD = "trace.id"
APM_LINK_FIELD = "trace.apm_link"
"""Data-view runtime field holding the trace id again, so it can carry a second link.

A field has one formatter; ``trace.id`` links to the trace's audit events, this copy
links to the APM trace view. It is computed by Kibana's runtime mapping (Painless), which
every Elasticsearch distribution Kibana runs against provides."""

# Versions Kibana 8.19 writes for these types (its own sample data uses the same), so the
# import runs no migration over objects that are already in the current shape.
_CORE_MIGRATION_VERSION = "8.8.0"
_TYPE_MIGRATION_VERSION = {
    "index-pattern": "7.11.0",
    "search": "7.9.3",
    "dashboard": "8.7.0",
}
_PANEL_VERSION = "8.11.0"

_SEARCH_INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
# Layer, column and panel ids only need to be unique and stable; name-based UUIDs are both.
_ID_NAMESPACE = uuid.UUID("5b0c7a2e-6f1d-4a53-9c1e-2f0d7b8a4c61")


def _uid(name: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, name))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class DataView:
    """One data view: what it is called and which indices it reads."""

    id: str
    name: str
    title: str
    time_field: str
    trace_links: bool


def data_views() -> tuple[DataView, ...]:
    """The data views, events first (the saved searches and the dashboard use it)."""
    return (
        DataView(EVENTS_VIEW_ID, "Audit events", EVENTS_PATTERN, "@timestamp", True),
        DataView(
            REJECTED_VIEW_ID,
            "Audit rejected records",
            REJECTED_PATTERN,
            "@timestamp",
            False,
        ),
        DataView(SPANS_VIEW_ID, "Audit spans", SPANS_PATTERN, "@timestamp", True),
    )


def _rison_string(text: str) -> str:
    """A Rison string literal: quoted with ', where ! escapes ' and !."""
    return "'" + text.replace("!", "!!").replace("'", "!'") + "'"


def trace_events_url() -> str:
    """Relative URL of Discover showing the audit events of the trace ``{{value}}``.

    ``../app/`` rather than ``/app/``: Kibana's URL formatter resolves it against its
    ``/app`` route, so the link also works when Kibana is served under a base path.
    ``"`` is sent as ``%22`` (the fragment must not carry a raw quote).
    """
    kql = f"{TRACE_ID_FIELD}:%22{{{{value}}}}%22"
    query = f"(language:kuery,query:{_rison_string(kql)})"
    state = f"(index:{_rison_string(EVENTS_VIEW_ID)},query:{query})"
    return f"../app/discover#/?_a={state}"


def apm_trace_url() -> str:
    """Relative URL of the APM trace view for the trace ``{{value}}``."""
    return "../app/apm/link-to/trace/{{value}}"


def _data_view_object(view: DataView) -> dict[str, Any]:
    formats: dict[str, Any] = {}
    runtime: dict[str, Any] = {}
    if view.trace_links:
        formats[TRACE_ID_FIELD] = {
            "id": "url",
            "params": {
                "type": "a",
                "urlTemplate": trace_events_url(),
                "labelTemplate": "{{value}}",
            },
        }
        formats[APM_LINK_FIELD] = {
            "id": "url",
            "params": {
                "type": "a",
                "urlTemplate": apm_trace_url(),
                "labelTemplate": "{{value}} (APM)",
            },
        }
        runtime[APM_LINK_FIELD] = {
            "type": "keyword",
            "script": {
                "source": (
                    f"if (doc.containsKey('{TRACE_ID_FIELD}') && "
                    f"doc['{TRACE_ID_FIELD}'].size() > 0) "
                    f"{{ emit(doc['{TRACE_ID_FIELD}'].value); }}"
                )
            },
        }
    return {
        "type": "index-pattern",
        "id": view.id,
        "attributes": {
            "title": view.title,
            "name": view.name,
            "timeFieldName": view.time_field,
            "fieldFormatMap": _json(formats),
            "runtimeFieldMap": _json(runtime),
            "fieldAttrs": "{}",
            "fields": "[]",
            "sourceFilters": "[]",
            "typeMeta": "{}",
        },
        "references": [],
        "coreMigrationVersion": _CORE_MIGRATION_VERSION,
        "typeMigrationVersion": _TYPE_MIGRATION_VERSION["index-pattern"],
    }


def _kql_any(field: str, values: tuple[str, ...]) -> str:
    if len(values) == 1:
        return f"{field}:{values[0]}"
    return f"{field}:({' or '.join(values)})"


@dataclass(frozen=True, slots=True)
class _Queries:
    """The KQL the objects use, from the schema's stored names and enum values."""

    failed_or_denied: str
    permission_changes: str
    authentication_failures: str


def _stored(schema: Schema, attribute: str) -> str:
    return schema.field(attribute).stored


def _enum_values(schema: Schema, attribute: str, wanted: tuple[str, ...]) -> tuple[str, ...]:
    allowed = schema.field(attribute).enum
    missing = [v for v in wanted if v not in allowed]
    if missing:
        raise ValueError(f"{attribute} has no value {missing[0]!r} (schema: {allowed})")
    return wanted


def _queries(schema: Schema) -> _Queries:
    outcome = _stored(schema, "audit.outcome")
    category = _stored(schema, "audit.category")
    bad = _kql_any(outcome, _enum_values(schema, "audit.outcome", ("failure", "denied")))
    perm = _enum_values(schema, "audit.category", ("permission_change",))
    auth = _enum_values(schema, "audit.category", ("authentication",))
    return _Queries(
        failed_or_denied=bad,
        permission_changes=_kql_any(category, perm),
        authentication_failures=f"{_kql_any(category, auth)} and {bad}",
    )


def _event_columns(schema: Schema) -> list[str]:
    return [
        _stored(schema, "audit.action"),
        _stored(schema, "audit.category"),
        _stored(schema, "audit.outcome"),
        _stored(schema, "audit.actor.id"),
        _stored(schema, "audit.resource.type"),
        _stored(schema, "audit.resource.id"),
        "service.name",
        _stored(schema, "audit.reason"),
        TRACE_ID_FIELD,
    ]


def _saved_search(
    object_id: str,
    title: str,
    description: str,
    query: str,
    columns: list[str],
    view_id: str = EVENTS_VIEW_ID,
) -> dict[str, Any]:
    source = {
        "query": {"query": query, "language": "kuery"},
        "filter": [],
        "indexRefName": _SEARCH_INDEX_REF,
    }
    return {
        "type": "search",
        "id": object_id,
        "attributes": {
            "title": title,
            "description": description,
            "columns": columns,
            "sort": [["@timestamp", "desc"]],
            "grid": {},
            "hideChart": False,
            "isTextBasedQuery": False,
            "timeRestore": False,
            "kibanaSavedObjectMeta": {"searchSourceJSON": _json(source)},
        },
        "references": [{"name": _SEARCH_INDEX_REF, "type": "index-pattern", "id": view_id}],
        "coreMigrationVersion": _CORE_MIGRATION_VERSION,
        "typeMigrationVersion": _TYPE_MIGRATION_VERSION["search"],
    }


def _saved_searches(schema: Schema) -> list[dict[str, Any]]:
    q = _queries(schema)
    columns = _event_columns(schema)
    return [
        _saved_search(
            SEARCH_FAILED_DENIED_ID,
            "Audit: failed and denied actions",
            "Audit events whose outcome is failure or denied, newest first.",
            q.failed_or_denied,
            columns,
        ),
        _saved_search(
            SEARCH_PERMISSION_CHANGES_ID,
            "Audit: permission changes",
            "Grants, revocations and role changes (category permission_change), with the "
            "user whose permissions changed.",
            q.permission_changes,
            [
                *columns[:4],
                _stored(schema, "audit.target.user.id"),
                _stored(schema, "audit.actor.roles"),
                schema.path_of("ecs_type"),
                *columns[4:],
            ],
        ),
        _saved_search(
            SEARCH_AUTH_FAILURES_ID,
            "Audit: authentication failures",
            "Failed or denied authentication attempts.",
            q.authentication_failures,
            [*columns[:4], "client.ip", "user_agent.original", *columns[7:]],
        ),
        _saved_search(
            SEARCH_REJECTED_ID,
            "Audit: rejected records",
            "Records the receiver refused (dead letters), with the rule each one broke.",
            "",
            # The dead-letter document's own fields (indexer/deadletter.py).
            ["kind", "reasons.field", "reasons.rule", "reasons.message", "service.name"],
            REJECTED_VIEW_ID,
        ),
    ]


# ---- Lens by value -------------------------------------------------------------------------


def _count_column(label: str = "Count of records", kql: str | None = None) -> dict[str, Any]:
    column: dict[str, Any] = {
        "label": label,
        "dataType": "number",
        "operationType": "count",
        "isBucketed": False,
        "scale": "ratio",
        "sourceField": "___records___",
        "params": {"emptyAsNull": True},
    }
    if label != "Count of records":
        column["customLabel"] = True
    if kql is not None:
        column["filter"] = {"query": kql, "language": "kuery"}
    return column


def _terms_column(field: str, size: int, order_by: str, label: str) -> dict[str, Any]:
    return {
        "label": label,
        "customLabel": True,
        "dataType": "string",
        "operationType": "terms",
        "sourceField": field,
        "isBucketed": True,
        "scale": "ordinal",
        "params": {
            "size": size,
            "orderBy": {"type": "column", "columnId": order_by},
            "orderDirection": "desc",
            "otherBucket": True,
            "missingBucket": False,
            "parentFormat": {"id": "terms"},
        },
    }


def _date_column(field: str) -> dict[str, Any]:
    return {
        "label": field,
        "dataType": "date",
        "operationType": "date_histogram",
        "sourceField": field,
        "isBucketed": True,
        "scale": "interval",
        "params": {"interval": "auto", "includeEmptyRows": True, "dropPartials": False},
    }


@dataclass(frozen=True, slots=True)
class _LensPanel:
    key: str
    title: str
    visualization_type: str
    visualization: dict[str, Any]
    layer_id: str
    columns: dict[str, dict[str, Any]]
    column_order: list[str]
    grid: tuple[int, int, int, int]


def _layer_ref_name(layer_id: str) -> str:
    return f"indexpattern-datasource-layer-{layer_id}"


def _lens_panel(p: _LensPanel) -> tuple[dict[str, Any], list[dict[str, str]]]:
    panel_index = _uid(f"panel/{p.key}")
    ref = {"type": "index-pattern", "id": EVENTS_VIEW_ID, "name": _layer_ref_name(p.layer_id)}
    attributes = {
        "title": p.title,
        "description": "",
        "visualizationType": p.visualization_type,
        "type": "lens",
        "references": [ref],
        "state": {
            "visualization": p.visualization,
            "query": {"query": "", "language": "kuery"},
            "filters": [],
            "datasourceStates": {
                "formBased": {
                    "layers": {
                        p.layer_id: {
                            "columns": p.columns,
                            "columnOrder": p.column_order,
                            "incompleteColumns": {},
                        }
                    }
                }
            },
            "internalReferences": [],
            "adHocDataViews": {},
        },
    }
    x, y, w, h = p.grid
    panel = {
        "version": _PANEL_VERSION,
        "type": "lens",
        "gridData": {"x": x, "y": y, "w": w, "h": h, "i": panel_index},
        "panelIndex": panel_index,
        "embeddableConfig": {"attributes": attributes, "enhancements": {}},
        "title": p.title,
    }
    return panel, [{**ref, "name": f"{panel_index}:{ref['name']}"}]


def _over_time_panel(
    key: str, title: str, field: str, size: int, grid: tuple[int, int, int, int]
) -> _LensPanel:
    layer = _uid(f"{key}/layer")
    date, split, count = _uid(f"{key}/date"), _uid(f"{key}/split"), _uid(f"{key}/count")
    visualization = {
        "legend": {"isVisible": True, "position": "right"},
        "valueLabels": "hide",
        "fittingFunction": "None",
        "axisTitlesVisibilitySettings": {"x": False, "yLeft": False, "yRight": True},
        "tickLabelsVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
        "gridlinesVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
        "preferredSeriesType": "bar_stacked",
        "layers": [
            {
                "layerId": layer,
                "layerType": "data",
                "seriesType": "bar_stacked",
                "xAccessor": date,
                "accessors": [count],
                "splitAccessor": split,
                "position": "top",
                "showGridlines": False,
            }
        ],
    }
    columns = {
        split: _terms_column(field, size, count, field),
        date: _date_column("@timestamp"),
        count: _count_column("Events"),
    }
    return _LensPanel(
        key, title, "lnsXY", visualization, layer, columns, [split, date, count], grid
    )


def _table_panel(
    key: str,
    title: str,
    buckets: list[tuple[str, int, str]],
    metrics: list[tuple[str, str | None]],
    grid: tuple[int, int, int, int],
) -> _LensPanel:
    layer = _uid(f"{key}/layer")
    metric_ids = [_uid(f"{key}/metric/{label}") for label, _ in metrics]
    columns: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for field, size, label in buckets:
        column_id = _uid(f"{key}/bucket/{field}")
        columns[column_id] = _terms_column(field, size, metric_ids[0], label)
        order.append(column_id)
    for column_id, (label, kql) in zip(metric_ids, metrics, strict=True):
        columns[column_id] = _count_column(label, kql)
        order.append(column_id)
    visualization = {
        "layerId": layer,
        "layerType": "data",
        "columns": [{"columnId": c, "isTransposed": False} for c in order],
    }
    return _LensPanel(key, title, "lnsDatatable", visualization, layer, columns, order, grid)


def _dashboard(schema: Schema) -> dict[str, Any]:
    q = _queries(schema)
    category = _stored(schema, "audit.category")
    outcome = _stored(schema, "audit.outcome")
    lens = [
        _over_time_panel(
            "by-category",
            "Events over time by category",
            category,
            len(schema.field("audit.category").enum),
            (0, 0, 24, 15),
        ),
        _over_time_panel(
            "by-outcome",
            "Events over time by outcome",
            outcome,
            len(schema.field("audit.outcome").enum),
            (24, 0, 24, 15),
        ),
        _table_panel(
            "top-actors",
            "Top actors",
            [
                (_stored(schema, "audit.actor.id"), 10, "Actor"),
                (_stored(schema, "audit.actor.type"), 4, "Actor type"),
            ],
            [("Events", None), ("Failed or denied", q.failed_or_denied)],
            (0, 15, 24, 15),
        ),
        _table_panel(
            "top-resources",
            "Top resources",
            [
                (_stored(schema, "audit.resource.type"), 5, "Resource type"),
                (_stored(schema, "audit.resource.id"), 10, "Resource"),
            ],
            [("Events", None), ("Failed or denied", q.failed_or_denied)],
            (24, 15, 24, 15),
        ),
    ]
    panels: list[dict[str, Any]] = []
    references: list[dict[str, str]] = []
    for spec in lens:
        panel, refs = _lens_panel(spec)
        panels.append(panel)
        references.extend(refs)

    search_index = _uid("panel/recent-failures")
    panels.append(
        {
            "version": _PANEL_VERSION,
            "type": "search",
            "gridData": {"x": 0, "y": 30, "w": 48, "h": 18, "i": search_index},
            "panelIndex": search_index,
            "embeddableConfig": {"enhancements": {}},
            "panelRefName": f"panel_{search_index}",
            "title": "Recent failed and denied actions",
        }
    )
    references.append(
        {
            "name": f"{search_index}:panel_{search_index}",
            "type": "search",
            "id": SEARCH_FAILED_DENIED_ID,
        }
    )
    return {
        "type": "dashboard",
        "id": DASHBOARD_ID,
        "attributes": {
            "title": "Audit overview",
            "description": "Audit events by category and outcome, the most active actors "
            "and resources, and the latest failed or denied actions.",
            "panelsJSON": _json(panels),
            "optionsJSON": _json(
                {
                    "useMargins": True,
                    "syncColors": False,
                    "syncCursor": True,
                    "syncTooltips": False,
                    "hidePanelTitles": False,
                }
            ),
            "timeRestore": True,
            "timeFrom": "now-24h",
            "timeTo": "now",
            "refreshInterval": {"pause": True, "value": 60000},
            "version": 1,
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": _json(
                    {"query": {"query": "", "language": "kuery"}, "filter": []}
                )
            },
        },
        "references": references,
        "coreMigrationVersion": _CORE_MIGRATION_VERSION,
        "typeMigrationVersion": _TYPE_MIGRATION_VERSION["dashboard"],
    }


def saved_objects(schema: Schema | None = None) -> list[dict[str, Any]]:
    """Every saved object, referenced objects before the objects that reference them."""
    schema = schema or load_schema()
    return [
        *(_data_view_object(v) for v in data_views()),
        *_saved_searches(schema),
        _dashboard(schema),
    ]


def render_ndjson(objects: list[dict[str, Any]] | None = None) -> str:
    """The objects as NDJSON, one per line, keys sorted so the file diffs cleanly."""
    objects = saved_objects() if objects is None else objects
    return "".join(json.dumps(o, sort_keys=True, ensure_ascii=False) + "\n" for o in objects)
