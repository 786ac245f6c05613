"""Generate ``docs/schema.md``, the schema reference, from the schema itself.

Run ``otel-audit schema docs --write`` after changing ``audit_event.v1.json``; a test fails
while the committed file differs from :func:`render`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from otel_audit.record import LogRecordData
from otel_audit.schema import SCHEMA_FILE, Schema, load_schema

__all__ = ["DOCS_PATH", "example_document", "example_record", "render"]

DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
REGENERATE = "otel-audit schema docs --write"

# Fixed instants so the generated example never changes between runs.
_EXAMPLE_TIME_NS = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
_EXAMPLE_OBSERVED_NS = _EXAMPLE_TIME_NS + 250_000
_EXAMPLE_RECEIVED_NS = _EXAMPLE_TIME_NS + 48_000_000


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _requirement(value: str, schema: Schema) -> str:
    if value == "always":
        return "required"
    if value == "resource_categories":
        cats = ", ".join(sorted(schema.resource_required_categories))
        return f"required for {cats}"
    if value == "derived":
        return "recommended (derived when absent)"
    return "optional"


def _rule(f: Any) -> str:
    if f.array:
        return "array of strings"
    if f.enum:
        return "one of " + ", ".join(_code(v) for v in f.enum)
    if f.pattern is not None:
        return "matches " + _code(f.pattern.pattern)
    return "string"


def example_record(schema: Schema | None = None) -> LogRecordData:
    """A complete, valid record built from the schema's examples (what the docs show)."""
    schema = schema or load_schema()
    attributes: dict[str, Any] = {
        f.attribute: [f.example] if f.array else f.example for f in schema.fields if f.example
    }
    attributes["order.total_cents"] = 129900
    body = (
        f"{attributes['audit.actor.type']} {attributes['audit.actor.id']} "
        f"{attributes['audit.action']} {attributes['audit.resource.type']}/"
        f"{attributes['audit.resource.id']}: {attributes['audit.outcome']}"
    )
    severity = schema.severity[attributes["audit.outcome"]]
    return LogRecordData(
        attributes=attributes,
        resource={
            "service.name": "billing",
            "service.version": "2.4.1",
            "deployment.environment.name": "production",
            "k8s.pod.name": "billing-7d9f8-x2x1q",
        },
        time_unix_nano=_EXAMPLE_TIME_NS,
        observed_time_unix_nano=_EXAMPLE_OBSERVED_NS,
        severity_number=severity,
        severity_text="INFO" if severity < 13 else "WARN",
        body=body,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
        flags=1,
        event_name=attributes["audit.action"],
        scope_name="otel_audit",
        scope_version="0.1.0",
    )


def example_document(schema: Schema | None = None) -> dict[str, Any]:
    """The stored document of :func:`example_record`."""
    from otel_audit.document import build_document

    return build_document(example_record(schema), received_ns=_EXAMPLE_RECEIVED_NS, schema=schema)


def _values_text(values: list[dict[str, str]]) -> str:
    return ", ".join(f"`{v['value']}` ({v['description']})" for v in values)


def _derived_description(entry: dict[str, Any]) -> str:
    """A derived field's description with the literal values the schema gives it."""
    text = entry["description"]
    if "value" in entry:
        text += f" Always `{entry['value']}`."
    if "default" in entry:
        text += f" `{entry['default']}` when nothing maps."
    if "values" in entry:
        text = text.rstrip(".") + ": " + _values_text(entry["values"]) + "."
    return str(text)


def _stored_rows(schema: Schema) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for rec in schema.record_fields:
        rows.append((rec["stored"], rec["type"], f"record `{rec['source']}`", rec["description"]))
    for f in schema.fields:
        rows.append((f.stored, f.type, f"attribute `{f.attribute}`", f.description))
        for kind, copies in (f.actor_copies or {}).items():
            for attribute, stored in copies.items():
                source = schema.field(attribute)
                description = f"{source.stored}, when {f.attribute} is `{kind}`."
                rows.append((stored, source.type, f"attribute `{attribute}`", description))
    for rf in schema.resource_fields:
        rows.append((rf.stored, rf.type, f"resource `{rf.attribute}`", rf.description))
    for d in schema.derived_fields:
        rows.append((d["stored"], d["type"], "derived", _derived_description(d)))
    rows.sort(key=lambda r: (r[0] != "@timestamp", r[0]))
    return rows


def render(schema: Schema | None = None) -> str:
    """The whole Markdown reference."""
    schema = schema or load_schema()
    lim = schema.limits
    out: list[str] = []
    add = out.append
    add(f"<!-- Generated from otel_audit/schema/{SCHEMA_FILE} by `{REGENERATE}`. -->")
    add("<!-- Do not edit by hand: change the schema and regenerate. -->")
    add("")
    add(f"# Audit event schema, version {schema.version}")
    add("")
    add(schema.description)
    add("")
    add(
        f"A log record is an audit event when it carries the attribute "
        f"`{schema.marker_attribute}`. Records without it are not audit events and are "
        "rejected by the receiver with the rule `not_audit_event`."
    )
    add("")
    add("## Wire attributes (LogRecord attributes)")
    add("")
    add(
        "What a service in any language puts on the LogRecord. The Python helper "
        "`otel_audit.audit_event(...)` takes each as the keyword parameter shown. All values "
        "are strings, except the arrays of strings "
        + ", ".join(_code(f.attribute) for f in schema.fields if f.array)
        + ". Where a field names OpenTelemetry attributes that stand in for it (`user.id`, "
        "...), a record without the field may carry one of those instead."
    )
    add("")
    add(
        "| attribute | helper parameter | requirement | rule | max bytes | when too long "
        "| stored as |"
    )
    add("|---|---|---|---|---|---|---|")
    for f in schema.fields:
        size = "" if f.enum else str(f.max_bytes)
        oversize = "" if f.enum else ("rejected" if f.oversize == "reject" else "truncated")
        add(
            f"| `{f.attribute}` | `{f.param}` | {_requirement(f.required, schema)} | "
            f"{_cell(_rule(f))} | {size} | {oversize} | `{f.stored}` |"
        )
    add("")
    for f in schema.fields:
        extra = ""
        if f.client_supplied and "untrusted" not in f.description:
            extra = " Client-supplied: marked untrusted."
        example = f" Example: `{f.example}`." if f.example else ""
        add(f"- `{f.attribute}`: {f.description}{extra}{example}")
    add("")
    add(
        "Identifiers that are too long are rejected, never cut; values marked *truncated* "
        f"are cut to the limit and end with the marker `{schema.truncation_marker}`. "
        "Identifiers must not contain control characters."
    )
    add("")
    add(
        f"Any other attribute is kept as sent under `{schema.path_of('extra')}` (a `flattened` "
        "field, so "
        "new keys never change the mapping). Keys must be 1 to "
        f"{lim.max_attribute_key_bytes} bytes, without control characters, leading or "
        "trailing dots or empty segments (`..`)."
    )
    add("")
    add("### Record fields")
    add("")
    add("| LogRecord field | value |")
    add("|---|---|")
    add("| `Timestamp` | when it happened, from the emitting service's clock (required) |")
    add("| `TraceId`, `SpanId` | the active span; the OTel SDK fills them from the context |")
    add("| `EventName` | the action (the Python helper sets it) |")
    sev = ", ".join(f"`{k}` {v}" for k, v in schema.severity.items())
    add(f"| `SeverityNumber` | by outcome: {sev} (9 = INFO, 13 = WARN) |")
    add(
        "| `Body` | a short message for people, e.g. "
        "`user u-1 invoice.update invoice/inv-1: success` |"
    )
    add("")
    add("## Resource attributes")
    add("")
    add("| attribute | requirement | max bytes | stored as | description |")
    add("|---|---|---|---|---|")
    for rf in schema.resource_fields:
        req = "required" if rf.required == "always" else "optional"
        add(
            f"| `{rf.attribute}` | {req} | {rf.max_bytes} | `{rf.stored}` | "
            f"{_cell(rf.description)} |"
        )
    add("")
    add(f"Other resource attributes are kept under `{schema.path_of('origin')}` (`flattened`).")
    add("")
    add("## Category and outcome in ECS terms")
    add("")
    add(
        "| `audit.category` | ECS `event.category` | ECS `event.type` from the action's verb | "
        "from the outcome | otherwise |"
    )
    add("|---|---|---|---|---|")
    rules = schema.ecs_type
    for cat, ecs in schema.ecs_category.items():
        verbs = ", ".join(_code(v) for v in sorted(rules.category_verbs.get(cat, ())))
        outcomes = ", ".join(
            f"{_code(o)}: {', '.join(_code(x) for x in types)}"
            for o, types in rules.category_outcomes.get(cat, {}).items()
        )
        default = ", ".join(_code(v) for v in rules.category_default.get(cat, ()))
        add(f"| `{cat}` | {', '.join(_code(c) for c in ecs)} | {verbs} | {outcomes} | {default} |")
    add("")
    add(
        "The action's verb is its last segment (`invoice.update`: `update`) or, when that is "
        "no verb, the segment's last word after `_` (`user.password_reset`: `reset`):"
    )
    add("")
    add("| ECS `event.type` | verbs |")
    add("|---|---|")
    by_type: dict[str, list[str]] = {}
    for verb, kind in rules.verb_types.items():
        by_type.setdefault(kind, []).append(verb)
    for kind, names in by_type.items():
        add(f"| `{kind}` | {', '.join(_code(v) for v in names)} |")
    add("")
    add("| `audit.outcome` | ECS `event.outcome` |")
    add("|---|---|")
    for outcome, ecs_outcome in schema.ecs_outcome.items():
        add(f"| `{outcome}` | `{ecs_outcome}` |")
    add("")
    add("## Stored document fields")
    add("")
    add(
        "The receiver stores each accepted event as one Elasticsearch document (index "
        "`audit-events-YYYY.MM.DD`, by event time; the mapping is strict). Names without the "
        "`audit.` prefix are ECS fields."
    )
    add("")
    add("| field | type | from | description |")
    add("|---|---|---|---|")
    for stored, kind, source, description in _stored_rows(schema):
        add(f"| `{stored}` | {kind} | {source} | {_cell(description)} |")
    add("")
    add("## Limits")
    add("")
    add("| limit | value |")
    add("|---|---|")
    for name, value in schema.raw["limits"].items():
        add(f"| `{name}` | {value} |")
    add("")
    add("## Markers")
    add("")
    add(
        f"- **Truncated**: a value cut to its limit ends with `{schema.truncation_marker}` and "
        f"its stored field name is listed in `{schema.path_of('truncated')}`."
    )
    add(
        "- **Untrusted**: values the client supplied that nobody verified (client address, "
        f"user agent) are listed by stored field name in `{schema.path_of('untrusted')}`."
    )
    flags = next(d for d in schema.derived_fields if d.get("role") == "flags")
    add(f"- **Flags** in `{flags['stored']}`: {_values_text(flags['values'])}.")
    add("")
    add("## Validation rules")
    add("")
    add("Each rejected record names the field and one of these rules:")
    add("")
    add("| rule | meaning |")
    add("|---|---|")
    for rule, meaning in _rules():
        add(f"| `{rule}` | {meaning} |")
    add("")
    add("## Example")
    add("")
    add("The attributes of a valid event:")
    add("")
    add("```json")
    add(json.dumps(example_record(schema).attributes, indent=2, ensure_ascii=False))
    add("```")
    add("")
    add("and the document the receiver stores for it (`event.ingested` is the receive time):")
    add("")
    add("```json")
    add(json.dumps(example_document(schema), indent=2, ensure_ascii=False))
    add("```")
    add("")
    return "\n".join(out)


def _rules() -> list[tuple[str, str]]:
    # The validator's docstring is where its rules are defined; read them from there.
    from otel_audit import validate as validate_module

    doc = validate_module.__doc__ or ""
    found = re.findall(r"^``(\w+)``\s+(.+)$", doc, flags=re.MULTILINE)
    return [(rule, meaning.strip().replace("``", "`")) for rule, meaning in found]
