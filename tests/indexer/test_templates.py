"""The events index template: derived from the schema, strict, and searchable on a real node."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from opentelemetry.sdk.trace import TracerProvider

from indexer.indices import EVENTS_ALIAS, event_index
from indexer.templates import event_properties, events_template, install_templates
from otel_audit import audit_event
from otel_audit.document import build_document
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.schema.docs import example_record
from otel_audit.testing import assert_audit_event, capture_audit_events
from otel_audit.validate import validate

SCHEMA = load_schema()


def _leaf_paths(props: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in props.items():
        if "properties" in value:
            out.update(_leaf_paths(value["properties"], f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _doc_paths(doc: dict[str, Any], mapped: set[str], prefix: str = "") -> set[str]:
    """Leaf paths of a document, stopping at mapped leaves (flattened fields hold objects)."""
    out: set[str] = set()
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in mapped:
            out |= _doc_paths(value, mapped, path + ".")
        else:
            out.add(path)
    return out


def _rich_record() -> LogRecordData:
    record = example_record()
    record.attributes["nested.map"] = {"a": [1, {"b": "c" * 20_000}], "n": 2**80}
    record.attributes["audit.actor.name"] = "A" * 5000
    record.resource["cloud.region"] = "eu-west-1"
    record.resource["deployment.environment"] = "legacy-env"
    record.time_unix_nano = 0  # exercises the no_event_time flag
    return record


def test_mapping_covers_every_stored_field_the_schema_names() -> None:
    leaves = _leaf_paths(event_properties(SCHEMA))
    named = [f.stored for f in SCHEMA.fields]
    named += [rf.stored for rf in SCHEMA.resource_fields]
    named += [r["stored"] for r in SCHEMA.record_fields]
    named += [d["stored"] for d in SCHEMA.derived_fields]
    for f in SCHEMA.fields:
        named += list(f.ip_copy)
        named += [p for copies in (f.actor_copies or {}).values() for p in copies.values()]
    assert set(named) <= set(leaves)
    assert set(leaves) == set(named)  # and nothing the schema does not name
    assert leaves["@timestamp"]["type"] == "date_nanos"
    assert leaves["user.id"]["type"] == "keyword"
    assert leaves["client.ip"]["type"] == "ip"
    assert leaves["audit.extra"]["type"] == "flattened"
    for f in SCHEMA.fields:
        if f.type == "keyword":
            assert leaves[f.stored]["ignore_above"] == f.max_bytes


def test_template_is_strict_and_dated() -> None:
    body = events_template()
    assert body["index_patterns"] == ["audit-events-*"]
    mappings = body["template"]["mappings"]
    assert mappings["dynamic"] == "strict"
    assert body["template"]["settings"]["index"]["translog"]["durability"] == "request"
    assert EVENTS_ALIAS in body["template"]["aliases"]


@pytest.mark.parametrize("record", [example_record(), _rich_record()], ids=["example", "rich"])
def test_documents_contain_only_mapped_fields(record: LogRecordData) -> None:
    assert validate(record) == []
    leaves = _leaf_paths(event_properties(SCHEMA))
    doc = build_document(record, received_ns=time.time_ns())
    unmapped = _doc_paths(doc, set(leaves)) - set(leaves)
    assert unmapped == set()


def test_rich_record_marks_truncation_and_flags() -> None:
    doc = build_document(_rich_record(), received_ns=time.time_ns())
    assert "user.name" in doc["audit"]["truncated"]
    assert doc["user"]["name"].endswith(SCHEMA.truncation_marker)
    assert "no_event_time" in doc["audit"]["flags"]
    assert doc["audit"]["extra"]["nested.map"]["n"] == str(2**80)
    assert doc["service"]["environment"] == "production"  # the newer name wins


# --- against the real node --------------------------------------------------------------


def _search(es: Elasticsearch, query: dict[str, Any]) -> list[str]:
    hits = es.search(index=EVENTS_ALIAS, query=query, size=10)["hits"]["hits"]
    return sorted(h["_id"] for h in hits)


@pytest.mark.integration
def test_template_installs_and_events_are_found(clean_es: Elasticsearch) -> None:
    es = clean_es
    installed = install_templates(es)
    assert "otel-audit-events" in installed
    stored = es.indices.get_index_template(name="otel-audit-events")
    assert stored["index_templates"][0]["index_template"]["index_patterns"] == ["audit-events-*"]

    tracer = TracerProvider().get_tracer("test")
    with capture_audit_events(resource={"service.name": "billing"}) as events:
        with tracer.start_as_current_span("update-invoice") as span:
            audit_event(
                action="invoice.update",
                category="data_change",
                outcome="denied",
                actor_id="u-1842",
                actor_type="user",
                actor_name="Ada",
                resource_type="invoice",
                resource_id="inv-7",
                client_address="203.0.113.7",
                reason="role billing.admin required",
                **{"http.route": "/invoices/{id}"},
            )
        audit_event(
            action="user.login",
            category="authentication",
            outcome="success",
            actor_id="u-9",
            actor_type="user",
        )
    event = assert_audit_event(events, action="invoice.update", outcome="denied")
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert event.trace_id == trace_id

    received = time.time_ns()
    ids = []
    for captured in events:
        assert validate(captured.record) == []
        doc = build_document(captured.record, received_ns=received)
        index = event_index(captured.record.time_unix_nano)
        resp = es.index(index=index, id=doc["event"]["id"], document=doc, op_type="create")
        assert resp["result"] == "created"
        ids.append(doc["event"]["id"])
    es.indices.refresh(index=EVENTS_ALIAS)
    update_id, login_id = ids

    # op_type=create: a retry of the same event is a conflict, never an overwrite.
    from elasticsearch import ConflictError

    with pytest.raises(ConflictError):
        es.index(
            index=event_index(events[0].record.time_unix_nano),
            id=update_id,
            document=build_document(events[0].record, received_ns=received),
            op_type="create",
        )

    assert _search(es, {"term": {"user.id": "u-1842"}}) == [update_id]
    assert _search(es, {"term": {"event.action": "invoice.update"}}) == [update_id]
    assert _search(
        es,
        {
            "bool": {
                "filter": [
                    {"term": {"audit.resource.type": "invoice"}},
                    {"term": {"audit.resource.id": "inv-7"}},
                ]
            }
        },
    ) == [update_id]
    assert _search(es, {"term": {"audit.outcome": "denied"}}) == [update_id]
    assert _search(es, {"term": {"event.outcome": "failure"}}) == [update_id]
    assert _search(es, {"term": {"event.outcome": "success"}}) == [login_id]
    assert _search(es, {"term": {"trace.id": trace_id}}) == [update_id]
    assert _search(es, {"term": {"client.ip": "203.0.113.0/24"}}) == [update_id]
    assert _search(es, {"term": {"audit.extra.http.route": "/invoices/{id}"}}) == [update_id]
    assert _search(es, {"match": {"event.reason.text": "required"}}) == [update_id]
    assert _search(es, {"term": {"service.name": "billing"}}) == sorted(ids)


@pytest.mark.integration
def test_strict_mapping_rejects_unknown_fields(clean_es: Elasticsearch) -> None:
    from elasticsearch import BadRequestError

    install_templates(clean_es)
    doc = build_document(example_record(), received_ns=time.time_ns())
    doc["surprise"] = 1
    with pytest.raises(BadRequestError, match="strict_dynamic_mapping_exception"):
        clean_es.index(
            index=event_index(example_record().time_unix_nano),
            id=doc["event"]["id"],
            document=doc,
            op_type="create",
        )


def test_templates_show_lists_every_template_and_its_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from otel_audit.cli import main

    assert main(["templates", "show", "--json"]) == 0
    templates = json.loads(capsys.readouterr().out)
    assert sorted(templates) == [
        "otel-audit-blocks",
        "otel-audit-events",
        "otel-audit-rejected",
        "otel-audit-spans",
    ]
    assert templates["otel-audit-events"]["index_patterns"] == ["audit-events-*"]
    assert main(["templates", "show"]) == 0
    out = capsys.readouterr().out
    assert "otel-audit-events: audit-events-*" in out and "event.action" in out
