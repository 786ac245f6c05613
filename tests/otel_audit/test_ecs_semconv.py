"""ECS and OpenTelemetry semantic conventions in the stored document and at the helper.

``event.type`` follows from the category, the action's verb and the outcome; ``ecs.version``
names the ECS release the fields follow; the semconv attributes ``user.id``, ``enduser.id``,
``user.name`` and ``user.roles`` stand in for the audit actor; a service or agent actor is
also stored where ECS looks for one; the target of a permission change is ``user.target.*``;
the helpers set ObservedTimestamp to when they saw the event, not to its time.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from otel_audit import audit_event
from otel_audit.document import build_document
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.testing import capture_audit_events
from otel_audit.validate import validate

SCHEMA = load_schema()
NOW = 1_767_225_600_000_000_000
SECOND = 1_000_000_000


def record(drop: tuple[str, ...] = (), **attrs: Any) -> LogRecordData:
    base: dict[str, Any] = {
        "audit.action": "invoice.update",
        "audit.category": "data_change",
        "audit.outcome": "success",
        "audit.actor.id": "u-1",
        "audit.actor.type": "user",
        "audit.resource.type": "invoice",
        "audit.resource.id": "inv-1",
    }
    base = {k: v for k, v in base.items() if k not in drop}
    base.update(attrs)
    return LogRecordData(
        attributes=base,
        resource={"service.name": "billing"},
        time_unix_nano=NOW - SECOND,
        observed_time_unix_nano=NOW - SECOND,
    )


def stored(rec: LogRecordData) -> dict[str, Any]:
    assert validate(rec, now_ns=NOW) == []
    return build_document(rec, received_ns=NOW)


@pytest.mark.parametrize(
    ("category", "action", "outcome", "types"),
    [
        # ECS database events are access, change, info or error: no creation or deletion.
        ("data_change", "invoice.create", "success", ["change"]),
        ("data_change", "invoice.update", "failure", ["change"]),
        ("data_change", "invoice.line_item_delete", "success", ["change"]),
        ("configuration", "flag.delete", "success", ["deletion"]),
        ("data_change", "invoice.recalculate", "success", ["change"]),
        ("data_access", "invoice.export", "success", ["access"]),
        ("data_access", "invoice.delete", "denied", ["access"]),
        ("authentication", "user.login", "failure", ["start"]),
        ("authentication", "user.logout", "success", ["end"]),
        ("authentication", "user.mfa_challenge", "success", ["info"]),
        ("authorization", "invoice.approve", "success", ["allowed"]),
        ("authorization", "invoice.approve", "denied", ["denied"]),
        ("authorization", "invoice.approve", "unknown", ["info"]),
        ("permission_change", "role.grant", "success", ["creation"]),
        ("permission_change", "role.revoke", "success", ["deletion"]),
        ("permission_change", "role.review", "success", ["change"]),
        ("configuration", "flag.set", "success", ["change"]),
        ("integration", "webhook.deliver", "denied", ["denied"]),
        ("integration", "webhook.create", "denied", ["creation", "denied"]),
        ("system", "job.start", "success", ["start"]),
        ("user_action", "report.view", "success", ["access"]),
    ],
)
def test_event_type_follows_category_verb_and_outcome(
    category: str, action: str, outcome: str, types: list[str]
) -> None:
    doc = stored(
        record(**{"audit.category": category, "audit.action": action, "audit.outcome": outcome})
    )
    assert doc["event"]["type"] == types
    assert doc["ecs"]["version"] == SCHEMA.constant("ecs_version")


def test_every_type_a_category_can_get_is_listed() -> None:
    rules = SCHEMA.ecs_type
    assert set(rules.category_default) == set(SCHEMA.field("audit.category").enum)
    for category in rules.category_default:
        assert rules.all_types(category) <= set(rules.verb_types.values()) | {
            t for ts in rules.category_outcomes.get(category, {}).values() for t in ts
        } | set(rules.category_default[category])


def test_reason_is_an_ecs_keyword() -> None:
    assert SCHEMA.field("audit.reason").type == "keyword"
    doc = stored(record(**{"audit.reason": "r" * 5000}))
    assert len(doc["event"]["reason"].encode()) <= 1024
    assert doc["audit"]["truncated"] == ["event.reason"]


def test_semconv_user_attributes_stand_in_for_the_actor() -> None:
    rec = record(
        drop=("audit.actor.id", "audit.actor.type"),
        **{"user.id": "u-7", "user.name": "Ada", "user.roles": ["admin", "viewer"]},
    )
    doc = stored(rec)
    assert doc["user"] == {"id": "u-7", "name": "Ada", "roles": ["admin", "viewer"]}
    assert doc["audit"]["actor"]["type"] == "user"
    assert doc["related"]["user"] == ["Ada", "u-7"]
    # Kept as sent too: nothing the emitter sent is dropped.
    assert doc["audit"]["extra"]["user.id"] == "u-7"


def test_enduser_id_stands_in_when_user_id_is_absent() -> None:
    doc = stored(record(drop=("audit.actor.id", "audit.actor.type"), **{"enduser.id": "e-1"}))
    assert doc["user"]["id"] == "e-1" and doc["audit"]["actor"]["type"] == "user"


def test_the_audit_actor_wins_over_the_semconv_one() -> None:
    doc = stored(record(**{"user.id": "someone-else"}))
    assert doc["user"]["id"] == "u-1"
    assert doc["audit"]["extra"]["user.id"] == "someone-else"


def test_alias_values_are_held_to_the_fields_rules() -> None:
    rec = record(drop=("audit.actor.id", "audit.actor.type"), **{"user.id": "u\n1"})
    assert [(v.field, v.rule) for v in validate(rec, now_ns=NOW)] == [("user.id", "control_chars")]
    rec = record(drop=("audit.actor.id", "audit.actor.type"), **{"user.id": 5})
    assert [(v.field, v.rule) for v in validate(rec, now_ns=NOW)] == [("user.id", "type")]
    # Without the actor id or a stand-in, the actor type is still required.
    rec = record(drop=("audit.actor.id", "audit.actor.type"))
    assert sorted((v.field, v.rule) for v in validate(rec, now_ns=NOW)) == [
        ("audit.actor.id", "required"),
        ("audit.actor.type", "required"),
    ]


@pytest.mark.parametrize(
    ("roles", "rule"),
    [("admin", "type"), ([1], "type"), (["ok", ""], "required"), (["a\nb"], "control_chars")],
)
def test_roles_are_an_array_of_identifiers(roles: Any, rule: str) -> None:
    rec = record(**{"audit.actor.roles": roles})
    assert [(v.field, v.rule) for v in validate(rec, now_ns=NOW)] == [("audit.actor.roles", rule)]


@pytest.mark.parametrize(
    ("kind", "path"), [("service", ("service", "origin")), ("agent", ("agent",))]
)
def test_service_and_agent_actors_are_also_stored_where_ecs_looks(
    kind: str, path: tuple[str, ...]
) -> None:
    doc = stored(
        record(**{"audit.actor.type": kind, "audit.actor.id": "svc-1", "audit.actor.name": "Svc"})
    )
    node = doc
    for key in path:
        node = node[key]
    assert node == {"id": "svc-1", "name": "Svc"}
    assert doc["user"]["id"] == "svc-1"  # what ECS rules and Kibana filter on stays
    assert doc["service"]["name"] == "billing"


def test_a_user_actor_has_no_copies() -> None:
    doc = stored(record())
    assert "origin" not in doc.get("service", {}) and "agent" not in doc


def test_permission_change_names_its_target_user() -> None:
    rec = record(
        **{
            "audit.category": "permission_change",
            "audit.action": "role.grant",
            "audit.resource.type": "role",
            "audit.resource.id": "billing.admin",
            "audit.target.user.id": "u-2077",
            "audit.target.user.name": "Grace",
        }
    )
    doc = stored(rec)
    assert doc["user"]["target"] == {"id": "u-2077", "name": "Grace"}
    assert doc["related"]["user"] == ["Grace", "u-1", "u-2077"]
    assert doc["event"]["category"] == ["iam"] and doc["event"]["type"] == ["creation"]


def test_the_helper_sets_observed_time_when_it_sees_the_event() -> None:
    an_hour_ago = NOW - 3600 * SECOND
    with capture_audit_events() as events:
        audit_event(
            action="invoice.update",
            category="data_change",
            outcome="success",
            actor_id="u-1",
            actor_type="user",
            resource_type="invoice",
            resource_id="inv-1",
            time_unix_nano=an_hour_ago,
            actor_roles=("admin",),
            target_user_id="u-2",
        )
    (event,) = events
    assert event.record.time_unix_nano == an_hour_ago
    assert event.record.observed_time_unix_nano > an_hour_ago + 3000 * SECOND
    assert event.attributes["audit.actor.roles"] == ["admin"]
    assert event.valid, event.violations


def test_event_created_is_the_observed_time() -> None:
    rec = replace(record(), observed_time_unix_nano=NOW - 2)
    assert stored(rec)["event"]["created"].endswith("999999998Z")
