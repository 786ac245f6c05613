"""Table-driven validator tests: each case names the exact violations (field, rule) expected."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from otel_audit.record import LogRecordData
from otel_audit.validate import Violation, summarize, validate
from tests.support.validate_table import TableCase, load_table

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

TABLE_NOW, TABLE = load_table()
assert TABLE_NOW == NOW

# Records only a Python caller can build: values no OTLP AnyValue (and no Node.js or Go
# helper argument) can hold, and containers of the wrong shape. The rest of the table is
# tests/testdata/validate_table.json, shared with the other languages' helpers.
PYTHON_ONLY: list[tuple[str, LogRecordData, list[tuple[str, str]]]] = [
    ("invalid/extra-object", rec(attrs={"obj": object()}), [("obj", "type")]),
    ("invalid/extra-set", rec(attrs={"s": {1, 2}}), [("s", "type")]),
    ("invalid/attributes-not-mapping", rec(attributes=[("a", 1)]), [("attributes", "type")]),
    ("invalid/resource-not-mapping", rec(resource="billing"), [("resource", "type")]),
    ("invalid/key-not-string", rec(attrs={42: "x"}), [("attributes", "attribute_key")]),
    ("invalid/time-float", rec(time_unix_nano=1.5e18), [("time_unix_nano", "type")]),
]
CASES: list[tuple[str, LogRecordData, list[tuple[str, str]]]] = [
    *((c.name, c.record, [(f, r) for f, r, _ in c.violations]) for c in TABLE),
    *PYTHON_ONLY,
]


@pytest.mark.parametrize("case", TABLE, ids=[c.name for c in TABLE])
def test_the_shared_table_gives_its_violations_word_for_word(case: TableCase) -> None:
    got = sorted((v.field, v.rule, v.message) for v in validate(case.record, now_ns=NOW))
    assert got == sorted(case.violations)


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
