"""The events index template: derived from the schema, strict, and searchable on a real node."""

from __future__ import annotations

import json
import time
from pathlib import Path
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


@pytest.mark.integration
def test_install_is_versioned_and_never_silently_overwrites(
    clean_es: Elasticsearch, es_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from indexer.mappings import TemplateSettings
    from indexer.templates import TemplateConflict, content_hash, stamped, template_version
    from otel_audit.cli import main

    name = "otel-audit-events"
    first = install_templates(clean_es)
    assert name in first
    stored = clean_es.indices.get_index_template(name=name)["index_templates"][0]
    body = stored["index_template"]
    assert body["version"] == template_version() and body["_meta"]["content_hash"]
    # Identical templates are left alone: nothing is rewritten at every start.
    assert install_templates(clean_es) == []
    # Other settings are an update of our own template.
    wider = TemplateSettings(number_of_shards=2, auto_expand_replicas="", number_of_replicas=1)
    assert name in install_templates(clean_es, wider)
    got = clean_es.indices.get_index_template(name=name)["index_templates"][0]
    settings = got["index_template"]["template"]["settings"]["index"]
    assert (settings["number_of_shards"], settings["number_of_replicas"]) == ("2", "1")

    # An operator changes the stored template by hand (its hash no longer matches).
    edited = dict(got["index_template"])
    edited["priority"] = 250
    clean_es.indices.put_index_template(name=name, **edited)
    with pytest.raises(TemplateConflict) as err:
        install_templates(clean_es)
    assert name in str(err.value) and "changed on the cluster" in str(err.value)
    assert list(err.value.conflicts) == [name]
    kept = clean_es.indices.get_index_template(name=name)["index_templates"][0]
    assert kept["index_template"]["priority"] == 250
    # The CLI names it and exits 1; --force replaces it.
    assert main(["templates", "install", "--url", es_url, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and name in out["error"] and "--force" in out["error"]
    assert main(["templates", "install", "--url", es_url, "--force", "--json"]) == 0
    assert name in json.loads(capsys.readouterr().out)["installed"]

    # A newer release's template is not downgraded.
    newer = stamped(events_template())
    newer["version"] = template_version() + 1
    newer["_meta"]["content_hash"] = content_hash(newer)  # consistent: not an edit
    clean_es.indices.put_index_template(name=name, **newer)
    with pytest.raises(TemplateConflict) as err:
        install_templates(clean_es)
    assert "newer than this release" in str(err.value)
    kept = clean_es.indices.get_index_template(name=name)["index_templates"][0]
    assert kept["index_template"]["version"] == template_version() + 1


def test_template_settings_from_config_keys() -> None:
    from types import SimpleNamespace

    from indexer.mappings import index_settings, template_settings_of

    auto = index_settings(template_settings_of(SimpleNamespace(replicas="0-all", shards=3)))
    assert auto["auto_expand_replicas"] == "0-all" and auto["number_of_shards"] == 3
    fixed = index_settings(template_settings_of(SimpleNamespace(replicas="2")))
    assert fixed["number_of_replicas"] == 2 and "auto_expand_replicas" not in fixed
    slow = index_settings(template_settings_of(SimpleNamespace(refresh_interval_s=30)))
    assert slow["refresh_interval"] == "30s"
    for bad, key in (({"replicas": "many"}, "replicas"), ({"shards": 0}, "shards")):
        with pytest.raises(ValueError, match=key):
            template_settings_of(SimpleNamespace(**bad))


@pytest.mark.integration
def test_writes_wait_for_the_active_shards_the_operator_asked_for(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path
) -> None:
    """One replica on a single node is never active: with wait_for_active_shards "all" the
    receiver does not take Elasticsearch's answer as stored, it keeps the events in its
    spool; with "1" the same events are written."""
    import asyncio

    from receiver.ingest.consumer import IngestConsumer, IngestSettings
    from receiver.ingest.spool import Spool
    from tests.receiver.conftest import audit_record

    spool = tmp_path / "spool"
    records = [audit_record(i) for i in range(5)]
    ids = [r.attributes["audit.event.id"] for r in records]

    async def write(wait: str) -> int:
        settings = IngestSettings(
            es_url=es_url,
            spool_dir=str(spool),
            replicas="1",
            wait_for_active_shards=wait,
            bulk_timeout_s=3.0,
            bulk_flush_interval_ms=2,
        )
        from indexer.es_client import EsConnection, async_client

        es = async_client(EsConnection(url=es_url), request_timeout=10, max_retries=0)
        consumer = IngestConsumer(
            es, Spool(str(spool), 16 * 1024 * 1024), settings, close_client=True
        )
        await consumer.start()
        try:
            result = await consumer.consume_logs(records)
            for _ in range(50):
                clean_es.indices.refresh(index="audit-*", ignore_unavailable=True)
                found = clean_es.count(index="audit-events-*", query={"ids": {"values": ids}})
                if found["count"] == len(ids) or wait == "all":
                    break
                await asyncio.sleep(0.2)
            return int(result.accepted)
        finally:
            await consumer.shutdown(5)

    assert asyncio.run(write("all")) == 5  # acknowledged: fsynced in the spool
    clean_es.indices.refresh(index="audit-*", ignore_unavailable=True)
    stored = clean_es.count(
        index="audit-events-*", query={"ids": {"values": ids}}, ignore_unavailable=True
    )
    assert stored["count"] == 0
    assert [p for p in spool.iterdir() if p.name != "LOCK"]
    settings = clean_es.indices.get_index_template(name="otel-audit-events")
    index = settings["index_templates"][0]["index_template"]["template"]["settings"]["index"]
    assert index["number_of_replicas"] == "1"
    asyncio.run(write("1"))  # the spool drains, now that one active copy is enough
    clean_es.indices.refresh(index="audit-*")
    assert clean_es.count(index="audit-events-*", query={"ids": {"values": ids}})["count"] == 5
