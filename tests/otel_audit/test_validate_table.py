"""Table-driven validator tests: each case names the exact violations (field, rule) expected."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from otel_audit.record import LogRecordData
from otel_audit.validate import Violation, summarize, validate

NOW = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
SECOND = 1_000_000_000

BASE_ATTRS: dict[str, Any] = {
    "audit.action": "invoice.update",
    "audit.category": "data_change",
    "audit.outcome": "success",
    "audit.actor.id": "u-1",
    "audit.actor.type": "user",
    "audit.resource.type": "invoice",
    "audit.resource.id": "inv-1",
    "audit.event.id": "019b7b3a-5c00-7abc-8def-0123456789ab",
}


def rec(
    drop: tuple[str, ...] = (),
    resource: Any = None,
    **fields: Any,
) -> LogRecordData:
    """A valid record, with attributes merged from ``attrs`` and removed by ``drop``."""
    attrs = {k: v for k, v in BASE_ATTRS.items() if k not in drop}
    attrs.update(fields.pop("attrs", {}))
    record = LogRecordData(
        attributes=attrs,
        resource={"service.name": "billing"} if resource is None else resource,
        time_unix_nano=NOW - SECOND,
        observed_time_unix_nano=NOW - SECOND,
        severity_number=9,
        severity_text="INFO",
        body="user u-1 invoice.update invoice/inv-1: success",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
    )
    return replace(record, **fields)


def nested(depth: int, container: str = "dict") -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"x": value} if container == "dict" else [value]
    return value


def authn(**attrs: Any) -> dict[str, Any]:
    return {"audit.category": "authentication", "audit.action": "user.login", **attrs}


BIG = "x" * 10_000_000

CASES: list[tuple[str, LogRecordData, list[tuple[str, str]]]] = [
    # --- valid --------------------------------------------------------------------------
    ("valid/minimal-data-change", rec(), []),
    (
        "valid/authentication-needs-no-resource",
        rec(drop=("audit.resource.type", "audit.resource.id"), attrs=authn()),
        [],
    ),
    (
        "valid/empty-resource-for-authentication",
        rec(attrs=authn(**{"audit.resource.type": "", "audit.resource.id": ""})),
        [],
    ),
    ("valid/no-event-id", rec(drop=("audit.event.id",)), []),
    (
        "valid/uppercase-uuid",
        rec(attrs={"audit.event.id": "019B7B3A-5C00-7ABC-8DEF-0123456789AB"}),
        [],
    ),
    ("valid/empty-body", rec(body=""), []),
    ("valid/no-body", rec(body=None), []),
    ("valid/map-body", rec(body={"msg": "hi", "n": [1, 2.5, None, True, b"\x00"]}), []),
    ("valid/observed-time-only", rec(time_unix_nano=0), []),
    ("valid/actor-id-at-limit", rec(attrs={"audit.actor.id": "u" * 256}), []),
    (
        "valid/optional-fields",
        rec(
            attrs={
                "audit.actor.name": "Ada\nLovelace",
                "audit.reason": "r" * 100_000,
                "audit.tenant.id": "acme",
                "audit.correlation_id": "order-1",
                "client.address": "203.0.113.7",
                "user_agent.original": "Mozilla/5.0" * 1000,
                "session.id": "s-1",
                "error.type": "E" * 5000,
            }
        ),
        [],
    ),
    (
        "valid/hostile-extras",
        rec(
            attrs={
                "big.text": BIG,
                "big.int": 10**100,
                "neg.int": -(2**200),
                "nan": float("nan"),
                "inf": float("-inf"),
                "bytes": b"\xff" * 1000,
                "none": None,
                "seq": [1, "a", None, [2.5, {"k": b"v"}]],
            }
        ),
        [],
    ),
    ("valid/nesting-at-limit", rec(attrs={"deep": nested(8)}), []),
    ("valid/list-nesting-at-limit", rec(attrs={"deep": nested(8, "list")}), []),
    ("valid/attributes-at-limit", rec(attrs={f"x.k{i}": i for i in range(128 - 8)}), []),
    ("valid/array-at-limit", rec(attrs={"arr": list(range(256))}), []),
    ("valid/unicode-ids", rec(attrs={"audit.actor.id": "ü" * 128}), []),
    (
        "valid/empty-optional",
        rec(attrs={"audit.actor.name": "", "audit.tenant.id": "", "session.id": ""}),
        [],
    ),
    # --- not an audit event -------------------------------------------------------------
    (
        "invalid/no-action",
        rec(drop=("audit.action",)),
        [("audit.action", "not_audit_event")],
    ),
    ("invalid/plain-log", LogRecordData(body="GET /"), [("audit.action", "not_audit_event")]),
    # --- required ----------------------------------------------------------------------
    ("invalid/missing-category", rec(drop=("audit.category",)), [("audit.category", "required")]),
    ("invalid/missing-outcome", rec(drop=("audit.outcome",)), [("audit.outcome", "required")]),
    ("invalid/missing-actor-id", rec(drop=("audit.actor.id",)), [("audit.actor.id", "required")]),
    (
        "invalid/missing-actor-type",
        rec(drop=("audit.actor.type",)),
        [("audit.actor.type", "required")],
    ),
    (
        "invalid/missing-everything-but-action",
        LogRecordData(
            attributes={"audit.action": "a.b"},
            resource={"service.name": "s"},
            time_unix_nano=NOW,
        ),
        [
            ("audit.category", "required"),
            ("audit.outcome", "required"),
            ("audit.actor.id", "required"),
            ("audit.actor.type", "required"),
        ],
    ),
    ("invalid/empty-action", rec(attrs={"audit.action": ""}), [("audit.action", "required")]),
    (
        "invalid/blank-actor-id",
        rec(attrs={"audit.actor.id": "   "}),
        [("audit.actor.id", "required")],
    ),
    (
        "invalid/empty-event-id",
        rec(attrs={"audit.event.id": ""}),
        [("audit.event.id", "required")],
    ),
    (
        "invalid/resource-type-missing-for-data-change",
        rec(drop=("audit.resource.type",)),
        [("audit.resource.type", "required")],
    ),
    (
        "invalid/resource-id-empty-for-data-access",
        rec(attrs={"audit.category": "data_access", "audit.resource.id": ""}),
        [("audit.resource.id", "required")],
    ),
    (
        "invalid/resource-missing-for-permission-change",
        rec(
            drop=("audit.resource.type", "audit.resource.id"),
            attrs={"audit.category": "permission_change"},
        ),
        [("audit.resource.type", "required"), ("audit.resource.id", "required")],
    ),
    (
        "invalid/resource-missing-for-configuration",
        rec(drop=("audit.resource.id",), attrs={"audit.category": "configuration"}),
        [("audit.resource.id", "required")],
    ),
    # --- types -------------------------------------------------------------------------
    ("invalid/action-int", rec(attrs={"audit.action": 5}), [("audit.action", "type")]),
    ("invalid/category-bool", rec(attrs={"audit.category": True}), [("audit.category", "type")]),
    (
        "invalid/outcome-list",
        rec(attrs={"audit.outcome": ["success"]}),
        [("audit.outcome", "type")],
    ),
    (
        "invalid/actor-id-dict",
        rec(attrs={"audit.actor.id": {"id": "u-1"}}),
        [("audit.actor.id", "type")],
    ),
    (
        "invalid/actor-type-bytes",
        rec(attrs={"audit.actor.type": b"user"}),
        [("audit.actor.type", "type")],
    ),
    (
        "invalid/actor-name-float",
        rec(attrs={"audit.actor.name": 1.5}),
        [("audit.actor.name", "type")],
    ),
    (
        "invalid/resource-type-none-is-missing",
        rec(attrs={"audit.resource.type": None}),
        [("audit.resource.type", "type"), ("audit.resource.type", "required")],
    ),
    ("invalid/extra-object", rec(attrs={"obj": object()}), [("obj", "type")]),
    ("invalid/extra-set", rec(attrs={"s": {1, 2}}), [("s", "type")]),
    ("invalid/attributes-not-mapping", rec(attributes=[("a", 1)]), [("attributes", "type")]),
    ("invalid/resource-not-mapping", rec(resource="billing"), [("resource", "type")]),
    # --- enums -------------------------------------------------------------------------
    ("invalid/category-enum", rec(attrs={"audit.category": "login"}), [("audit.category", "enum")]),
    (
        "invalid/outcome-enum-case",
        rec(attrs={"audit.outcome": "SUCCESS"}),
        [("audit.outcome", "enum")],
    ),
    (
        "invalid/actor-type-enum",
        rec(attrs={"audit.actor.type": "robot"}),
        [("audit.actor.type", "enum")],
    ),
    # --- action pattern ----------------------------------------------------------------
    (
        "invalid/action-uppercase",
        rec(attrs={"audit.action": "Invoice.Update"}),
        [("audit.action", "pattern")],
    ),
    (
        "invalid/action-space",
        rec(attrs={"audit.action": "invoice update"}),
        [("audit.action", "pattern")],
    ),
    (
        "invalid/action-no-dot",
        rec(attrs={"audit.action": "invoice"}),
        [("audit.action", "pattern")],
    ),
    (
        "invalid/action-trailing-dot",
        rec(attrs={"audit.action": "invoice."}),
        [("audit.action", "pattern")],
    ),
    (
        "invalid/action-leading-dot",
        rec(attrs={"audit.action": ".invoice"}),
        [("audit.action", "pattern")],
    ),
    (
        "invalid/action-digit-segment",
        rec(attrs={"audit.action": "invoice.2fa"}),
        [("audit.action", "pattern")],
    ),
    # --- sizes and characters of identifiers --------------------------------------------
    (
        "invalid/action-oversize",
        rec(attrs={"audit.action": "a." + "b" * 200}),
        [("audit.action", "max_bytes")],
    ),
    (
        "invalid/actor-id-oversize",
        rec(attrs={"audit.actor.id": "u" * 257}),
        [("audit.actor.id", "max_bytes")],
    ),
    (
        "invalid/actor-id-oversize-multibyte",
        rec(attrs={"audit.actor.id": "é" * 129}),
        [("audit.actor.id", "max_bytes")],
    ),
    (
        "invalid/resource-id-hostile-huge",
        rec(attrs={"audit.resource.id": BIG}),
        [("audit.resource.id", "max_bytes")],
    ),
    (
        "invalid/actor-id-newline",
        rec(attrs={"audit.actor.id": "u-1\nadmin"}),
        [("audit.actor.id", "control_chars")],
    ),
    (
        "invalid/resource-id-nul",
        rec(attrs={"audit.resource.id": "inv\x001"}),
        [("audit.resource.id", "control_chars")],
    ),
    (
        "invalid/session-id-del",
        rec(attrs={"session.id": "s\x7f"}),
        [("session.id", "control_chars")],
    ),
    (
        "invalid/actor-id-lone-surrogate",
        rec(attrs={"audit.actor.id": "u-\ud800"}),
        [("audit.actor.id", "encoding")],
    ),
    ("invalid/extra-lone-surrogate", rec(attrs={"note": ["ok", "\udfff"]}), [("note", "encoding")]),
    ("invalid/body-lone-surrogate", rec(body="hi \ud83d"), [("body", "encoding")]),
    # --- event id ----------------------------------------------------------------------
    (
        "invalid/event-id-form",
        rec(attrs={"audit.event.id": "not-a-uuid"}),
        [("audit.event.id", "pattern")],
    ),
    (
        "invalid/event-id-braces",
        rec(attrs={"audit.event.id": "{019b7b3a-5c00-7abc-8def-0123456789ab}"}),
        [("audit.event.id", "pattern")],
    ),
    (
        "invalid/event-id-no-dashes",
        rec(attrs={"audit.event.id": "019b7b3a5c007abc8def0123456789ab"}),
        [("audit.event.id", "pattern")],
    ),
    # --- resource ----------------------------------------------------------------------
    ("invalid/no-service-name", rec(resource={}), [("resource.service.name", "required")]),
    (
        "invalid/service-name-int",
        rec(resource={"service.name": 7}),
        [("resource.service.name", "type")],
    ),
    (
        "invalid/service-name-empty",
        rec(resource={"service.name": ""}),
        [("resource.service.name", "required")],
    ),
    (
        "invalid/service-name-control",
        rec(resource={"service.name": "bill\ning"}),
        [("resource.service.name", "control_chars")],
    ),
    (
        "invalid/service-name-oversize",
        rec(resource={"service.name": "s" * 257}),
        [("resource.service.name", "max_bytes")],
    ),
    (
        "invalid/resource-too-many",
        rec(resource={"service.name": "s", **{f"r{i}": i for i in range(128)}}),
        [("resource", "too_many")],
    ),
    (
        "invalid/resource-bad-key",
        rec(resource={"service.name": "s", "k8s..pod": "p"}),
        [("resource.k8s..pod", "attribute_key")],
    ),
    # --- attribute keys ----------------------------------------------------------------
    ("invalid/empty-key", rec(attrs={"": 1}), [("attributes", "attribute_key")]),
    (
        "invalid/key-double-dot",
        rec(attrs={"order..id": 1}),
        [("attributes.order..id", "attribute_key")],
    ),
    (
        "invalid/key-trailing-dot",
        rec(attrs={"order.": 1}),
        [("attributes.order.", "attribute_key")],
    ),
    (
        "invalid/key-control",
        rec(attrs={"order\nid": 1}),
        [("attributes.order\nid", "attribute_key")],
    ),
    ("invalid/key-not-string", rec(attrs={42: "x"}), [("attributes", "attribute_key")]),
    (
        "invalid/key-oversize",
        rec(attrs={"k" * 300: 1}),
        [("attributes." + "k" * 64, "attribute_key")],
    ),
    ("invalid/nested-key-empty", rec(attrs={"m": {"": 1}}), [("m", "attribute_key")]),
    # --- counts and nesting ------------------------------------------------------------
    (
        "invalid/too-many-attributes",
        rec(attrs={f"x.k{i}": i for i in range(128 - 8 + 1)}),
        [("attributes", "too_many")],
    ),
    ("invalid/array-too-long", rec(attrs={"arr": list(range(257))}), [("arr", "too_many")]),
    (
        "invalid/map-too-wide",
        rec(attrs={"m": {f"k{i}": i for i in range(257)}}),
        [("m", "too_many")],
    ),
    (
        "invalid/nesting-too-deep",
        rec(attrs={"deep": nested(9)}),
        [("deep" + ".x" * 8, "max_depth")],
    ),
    (
        "invalid/list-nesting-too-deep",
        rec(attrs={"deep": nested(9, "list")}),
        [("deep", "max_depth")],
    ),
    ("invalid/body-too-deep", rec(body=nested(9, "list")), [("body", "max_depth")]),
    # --- time --------------------------------------------------------------------------
    (
        "invalid/time-before-2000",
        rec(time_unix_nano=946_684_799 * SECOND),
        [("time_unix_nano", "time")],
    ),
    ("invalid/time-negative", rec(time_unix_nano=-1), [("time_unix_nano", "time")]),
    (
        "invalid/time-far-future",
        rec(time_unix_nano=NOW + 86_400 * SECOND + 1),
        [("time_unix_nano", "time")],
    ),
    (
        "invalid/time-missing",
        rec(time_unix_nano=0, observed_time_unix_nano=0),
        [("time_unix_nano", "required")],
    ),
    ("invalid/time-float", rec(time_unix_nano=1.5e18), [("time_unix_nano", "type")]),
    # --- several at once ---------------------------------------------------------------
    (
        "invalid/several",
        rec(
            drop=("audit.actor.type",),
            resource={},
            attrs={"audit.outcome": "maybe", "audit.actor.id": 1},
        ),
        [
            ("audit.outcome", "enum"),
            ("audit.actor.id", "type"),
            ("audit.actor.type", "required"),
            ("resource.service.name", "required"),
        ],
    ),
]


def _pairs(violations: list[Violation]) -> list[tuple[str, str]]:
    return sorted((v.field, v.rule) for v in violations)


@pytest.mark.parametrize(("record", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validate(record: LogRecordData, expected: list[tuple[str, str]]) -> None:
    violations = validate(record, now_ns=NOW)
    assert _pairs(violations) == sorted(expected)
    for v in violations:
        assert isinstance(v, Violation)
        assert v.message, v


def test_enough_cases() -> None:
    assert sum(1 for c in CASES if c[0].startswith("valid/")) >= 10
    assert sum(1 for c in CASES if c[0].startswith("invalid/")) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


def test_messages_are_bounded_for_hostile_values() -> None:
    violations = validate(rec(attrs={"audit.category": BIG}), now_ns=NOW)
    assert _pairs(violations) == [("audit.category", "enum")]
    assert len(violations[0].message) < 400


def test_summarize_names_the_first_violations() -> None:
    violations = validate(
        LogRecordData(attributes={"audit.action": "X"}, time_unix_nano=NOW), now_ns=NOW
    )
    text = summarize(violations, limit=2)
    assert text.startswith("audit.action: 'X' does not match")
    assert text.endswith(f"(+{len(violations) - 2} more)")


def test_cyclic_value_is_reported_not_raised() -> None:
    loop: list[Any] = []
    loop.append(loop)
    violations = validate(rec(attrs={"loop": loop}), now_ns=NOW)
    assert _pairs(violations) == [("loop", "max_depth")]
