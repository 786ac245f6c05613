"""The stored document: ECS names, derived fields, markers and JSON-exact values."""

from __future__ import annotations

import base64
import uuid
from dataclasses import replace
from typing import Any

import orjson
import pytest

from otel_audit.document import (
    build_document,
    content_hash,
    derive_event_id,
    format_ns,
)
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.schema.docs import example_record
from otel_audit.validate import validate

SCHEMA = load_schema()
T = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
MARK = SCHEMA.truncation_marker


def rec(**attrs: Any) -> LogRecordData:
    base = {
        "audit.action": "user.login",
        "audit.category": "authentication",
        "audit.outcome": "denied",
        "audit.actor.id": "u-1",
        "audit.actor.type": "user",
    }
    base.update(attrs)
    return LogRecordData(
        attributes=base,
        resource={"service.name": "auth"},
        time_unix_nano=T,
        observed_time_unix_nano=T + 1000,
        severity_text="WARN",
        body="user u-1 user.login: denied",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
        flags=1,
    )


def doc_of(record: LogRecordData, received_ns: int = T + 10**6) -> dict[str, Any]:
    assert validate(record, now_ns=T) == []
    doc = build_document(record, received_ns=received_ns)
    orjson.dumps(doc)  # always storable
    return doc


def test_ecs_names_and_derived_fields() -> None:
    doc = doc_of(rec(**{"audit.actor.name": "Ada", "audit.tenant.id": "acme"}))
    assert doc["@timestamp"] == "2026-01-01T00:00:00.123456789Z"
    assert doc["event"]["action"] == "user.login"
    assert doc["event"]["kind"] == "event"
    assert doc["event"]["category"] == ["authentication"]
    assert doc["event"]["outcome"] == "failure"  # denied is a failure in ECS
    assert doc["audit"]["outcome"] == "denied"
    assert doc["event"]["created"] == "2026-01-01T00:00:00.123457789Z"
    assert doc["event"]["ingested"] == "2026-01-01T00:00:00.124456789Z"
    assert doc["user"] == {"id": "u-1", "name": "Ada"}
    assert doc["organization"] == {"id": "acme"}
    assert doc["related"]["user"] == ["Ada", "u-1"]
    assert doc["service"] == {"name": "auth"}
    assert doc["trace"] == {"id": "4bf92f3577b34da6a3ce929d0e0e4736"}
    assert doc["span"] == {"id": "00f067aa0ba902b7"}
    assert doc["audit"]["correlation_id"] == doc["trace"]["id"]  # defaults to the trace
    assert doc["log"] == {"level": "WARN"}
    assert doc["message"] == "user u-1 user.login: denied"
    assert doc["audit"]["schema_version"] == SCHEMA.version
    assert "flags" not in doc["audit"]


@pytest.mark.parametrize(("category", "ecs"), sorted(SCHEMA.ecs_category.items()))
def test_every_category_maps_to_ecs(category: str, ecs: tuple[str, ...]) -> None:
    record = rec(
        **{
            "audit.category": category,
            "audit.resource.type": "invoice",
            "audit.resource.id": "i-1",
        }
    )
    assert doc_of(record)["event"]["category"] == list(ecs)


def test_event_id_from_emitter_is_lowercased() -> None:
    doc = doc_of(rec(**{"audit.event.id": "019B7B3A-5C00-7ABC-8DEF-0123456789AB"}))
    assert doc["event"]["id"] == "019b7b3a-5c00-7abc-8def-0123456789ab"
    assert doc["audit"]["event_id_source"] == "emitter"


def test_derived_event_id_is_deterministic() -> None:
    a = doc_of(rec(), received_ns=T + 1)
    b = doc_of(rec(), received_ns=T + 999_999_999)  # a retry, received later
    c = doc_of(rec(**{"audit.outcome": "success"}))
    assert a["event"]["id"] == b["event"]["id"] != c["event"]["id"]
    assert a["audit"]["event_id_source"] == "derived"
    u = uuid.UUID(a["event"]["id"])
    assert u.version == 8 and u.variant == uuid.RFC_4122
    assert a["audit"]["content_hash"] == content_hash(rec())
    assert derive_event_id(content_hash(rec())) == a["event"]["id"]


def test_content_hash_covers_what_the_emitter_sent() -> None:
    assert content_hash(rec()) == content_hash(rec())
    assert content_hash(rec()) != content_hash(replace(rec(), body="other"))
    assert content_hash(rec()) != content_hash(replace(rec(), time_unix_nano=T + 1))


def test_oversize_values_are_truncated_with_a_marker() -> None:
    name = "é" * 300  # 600 bytes, limit 256
    doc = doc_of(rec(**{"audit.actor.name": name, "audit.reason": "r" * 10_000}))
    stored = doc["user"]["name"]
    assert stored.endswith(MARK)
    assert len(stored.encode()) <= SCHEMA.field("audit.actor.name").max_bytes
    assert stored[: -len(MARK)] == "é" * len(stored[: -len(MARK)])  # no split character
    assert len(doc["event"]["reason"].encode()) <= SCHEMA.limits.max_text_bytes
    assert sorted(doc["audit"]["truncated"]) == ["event.reason", "user.name"]


def test_client_values_are_marked_untrusted_and_ip_copied() -> None:
    doc = doc_of(rec(**{"client.address": "[2001:db8::1]", "user_agent.original": "curl"}))
    assert doc["client"]["address"] == "[2001:db8::1]"
    assert doc["client"]["ip"] == doc["source"]["ip"] == "2001:db8::1"
    assert doc["related"]["ip"] == ["2001:db8::1"]
    assert doc["audit"]["untrusted"] == ["client.address", "user_agent.original"]
    doc = doc_of(rec(**{"client.address": "proxy.internal"}))
    assert "ip" not in doc["client"] and "source" not in doc


def test_extra_values_become_json_exact() -> None:
    doc = doc_of(
        rec(
            **{
                "big": 2**64,
                "nan": float("nan"),
                "inf": float("inf"),
                "raw": b"\x00\xff",
                "seq": (1, (2, 3)),
                "map": {"k": [None, True, 1.5]},
                "text": "t" * 20_000,
            }
        )
    )
    extra = doc["audit"]["extra"]
    assert extra["big"] == str(2**64)
    assert extra["nan"] == "nan" and extra["inf"] == "inf"
    assert base64.b64decode(extra["raw"]) == b"\x00\xff"
    assert extra["seq"] == [1, [2, 3]]
    assert extra["map"] == {"k": [None, True, 1.5]}
    assert extra["text"].endswith(MARK)
    assert "audit.extra.text" in doc["audit"]["truncated"]


def test_resource_fields_and_origin() -> None:
    record = rec()
    record.resource = {
        "service.name": "auth",
        "service.instance.id": "pod-1",
        "deployment.environment": "staging",
        "cloud.region": "eu-west-1",
    }
    doc = doc_of(record)
    assert doc["service"] == {"name": "auth", "node": {"name": "pod-1"}, "environment": "staging"}
    assert doc["audit"]["origin"]["resource"] == {
        "deployment.environment": "staging",
        "cloud.region": "eu-west-1",
    }


def test_flags_no_trace_no_event_time_and_clock_skew() -> None:
    record = replace(rec(), trace_id="", span_id="", time_unix_nano=0)
    doc = doc_of(record, received_ns=T + 400 * 10**9)
    assert doc["audit"]["flags"] == ["no_event_time", "no_trace", "clock_skew"]
    assert doc["audit"]["clock_skew_ms"] == (400 * 10**9 - 1000) // 10**6
    assert doc["@timestamp"] == format_ns(T + 1000)
    assert "trace" not in doc and "correlation_id" not in doc["audit"]


def test_correlation_id_given_is_kept() -> None:
    doc = doc_of(rec(**{"audit.correlation_id": "order-7"}))
    assert doc["audit"]["correlation_id"] == "order-7"


def test_body_forms() -> None:
    assert doc_of(replace(rec(), body={"a": [1, 2]}))["message"] == '{"a":[1,2]}'
    assert doc_of(replace(rec(), body=b"\x01"))["message"] == "AQ=="
    assert "message" not in doc_of(replace(rec(), body=""))
    long = doc_of(replace(rec(), body="b" * 100_000))
    assert long["message"].endswith(MARK)
    assert "message" in long["audit"]["truncated"]


def test_example_document_is_what_the_docs_show() -> None:
    doc = doc_of(example_record(), received_ns=example_record().time_unix_nano)
    assert doc["event"]["action"] == "invoice.update"
    assert doc["audit"]["extra"] == {"order.total_cents": 129900}


def test_time_format() -> None:
    assert format_ns(0) == "1970-01-01T00:00:00.000000000Z"


def _schema_with(derived: dict[str, dict[str, Any]]) -> Any:
    """The schema with the derived fields of the given roles changed as given."""
    import copy

    from otel_audit.schema import _parse

    raw = copy.deepcopy(SCHEMA.raw)
    for entry in raw["derived_fields"]:
        entry.update(derived.get(entry.get("role"), {}))
    return _parse(raw)


def test_stored_paths_and_values_are_the_schemas() -> None:
    schema = _schema_with(
        {
            "dataset": {"stored": "labels.dataset", "value": "acme.audit"},
            "flags": {
                "stored": "labels.findings",
                "values": [
                    {"role": "clock_skew", "value": "skew", "description": "."},
                    {"role": "no_event_time", "value": "untimed", "description": "."},
                    {"role": "no_trace", "value": "untraced", "description": "."},
                ],
            },
            "related_user": {"stored": "audit.related.users"},
            "related_ip": {"stored": "audit.related.ips"},
        }
    )
    record = replace(rec(), trace_id="", span_id="", time_unix_nano=0)
    doc = build_document(record, received_ns=T + 400 * 10**9, schema=schema)
    assert "dataset" not in doc["event"] and "related" not in doc
    assert doc["labels"] == {"dataset": "acme.audit", "findings": ["untimed", "untraced", "skew"]}
    assert doc["audit"]["related"] == {"users": ["u-1"]}
    assert "flags" not in doc["audit"]


def test_related_entities_are_one_object() -> None:
    from otel_audit.schema import SchemaError

    schema = _schema_with({"related_ip": {"stored": "client.related_ip"}})
    with pytest.raises(SchemaError, match="related_user, related_ip"):
        build_document(rec(), received_ns=T, schema=schema)
