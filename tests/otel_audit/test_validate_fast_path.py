"""The validator's fast path never decides differently from the full rule walk."""

from __future__ import annotations

import copy
import random
from typing import Any
from unittest import mock

import pytest

from otel_audit import validate as validate_module
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.validate import Violation, validate

SCHEMA = load_schema()
NOW = 1_767_225_600_000_000_000

BASE = LogRecordData(
    attributes={
        "audit.action": "invoice.update",
        "audit.category": "data_change",
        "audit.outcome": "success",
        "audit.actor.id": "u-1",
        "audit.actor.type": "user",
        "audit.actor.name": "Ada Lovelace",
        "audit.resource.type": "invoice",
        "audit.resource.id": "inv-1",
        "audit.event.id": "019abcde-f012-7345-8678-9abcdef01234",
        "client.address": "203.0.113.7",
        "session.id": "s-1",
        "http.response.status_code": 200,
    },
    resource={"service.name": "billing", "host.name": "node-1", "telemetry.sdk.language": "py"},
    time_unix_nano=NOW - 10**9,
    observed_time_unix_nano=NOW,
    severity_text="INFO",
    body="invoice.update by u-1",
)

ODD_VALUES: list[Any] = [
    "",
    " ",
    "\t",
    "a\x00b",
    "a\x7fb",
    "Jos\u00e9",
    "\ud800",
    "x" * 2000,
    "a.b",
    "INVOICE.update",
    "invoice",
    "data_access",
    "system",
    "denied",
    "agent",
    "019ABCDE-F012-7345-8678-9ABCDEF01234",
    5,
    True,
    None,
    1.5,
    float("nan"),
    2**70,
    b"\x00",
    [1, "x"],
    {"k": "v"},
    {"": 1},
    {"a.": [1]},
    [[[[[[[[[["deep"]]]]]]]]]],
    list(range(300)),
    ("t",),
    object(),
]
ODD_KEYS: list[Any] = [
    *SCHEMA.by_attribute,
    "x.y",
    "",
    ".lead",
    "trail.",
    "a..b",
    "ctl\x01",
    "\u00e9.k",
    "k" * 300,
    7,
]
RESOURCE_KEYS = [f.attribute for f in SCHEMA.resource_fields] + ["deployment.environment", "x", ""]


def _mutated(rnd: random.Random) -> LogRecordData:
    record = copy.deepcopy(BASE)
    for _ in range(rnd.randrange(4)):
        op = rnd.randrange(6)
        if op == 0:
            record.attributes[rnd.choice(ODD_KEYS)] = rnd.choice(ODD_VALUES)
        elif op == 1:
            record.attributes.pop(rnd.choice(list(record.attributes)), None)
        elif op == 2:
            record.resource[rnd.choice(RESOURCE_KEYS)] = rnd.choice(ODD_VALUES)
        elif op == 3:
            record.resource.pop(rnd.choice(list(record.resource) or ["x"]), None)
        elif op == 4:
            record.body = rnd.choice(ODD_VALUES)
        else:
            record.time_unix_nano = rnd.choice([0, 5, NOW + 10**15, NOW - 10**12, True])
    return record


def _reference(record: LogRecordData) -> list[Violation]:
    with mock.patch.object(validate_module, "_plain_valid", return_value=False):
        return validate(record, now_ns=NOW, schema=SCHEMA)


@pytest.mark.parametrize("seed", range(4))
def test_fast_path_agrees_with_the_full_walk(seed: int) -> None:
    rnd = random.Random(seed)
    valid = 0
    for _ in range(500):
        record = _mutated(rnd)
        got = validate(record, now_ns=NOW, schema=SCHEMA)
        assert got == _reference(record), record
        valid += not got
    # Both outcomes are exercised, so the comparison means something.
    assert 50 < valid < 450


def test_a_remembered_resource_is_judged_again_after_a_change() -> None:
    record = copy.deepcopy(BASE)
    assert validate(record, now_ns=NOW, schema=SCHEMA) == []
    record.resource["service.name"] = "bad\x00name"
    assert [v.rule for v in validate(record, now_ns=NOW, schema=SCHEMA)] == ["control_chars"]
