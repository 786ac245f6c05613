"""Roles: how the document builders find the stored paths and literal values in the schema."""

from __future__ import annotations

import copy

import pytest

from otel_audit.schema import SchemaError, _parse, load_schema

SCHEMA = load_schema()


def test_every_role_has_a_stored_path_of_the_schema() -> None:
    stored = {f.stored for f in SCHEMA.fields}
    stored |= {e["stored"] for e in (*SCHEMA.record_fields, *SCHEMA.derived_fields)}
    assert set(SCHEMA.paths.values()) <= stored
    assert SCHEMA.path_of("timestamp") == "@timestamp"
    assert SCHEMA.path_of("event_id") == SCHEMA.field(SCHEMA.attribute_of("event_id")).stored
    assert SCHEMA.attribute_of("category") == "audit.category"


def test_constants_come_from_value_default_and_values() -> None:
    assert SCHEMA.constant("kind") == "event"
    assert SCHEMA.constant("dataset") == "otel_audit.events"
    assert SCHEMA.constant("ecs_outcome.default") == "unknown"
    assert SCHEMA.constant("flags.no_trace") == "no_trace"
    assert SCHEMA.constant("event_id_source.derived") == "derived"
    assert SCHEMA.max_bytes_of("log_level") == 64


def test_the_attributes_a_resource_category_needs_are_the_schemas() -> None:
    needed = [f.attribute for f in SCHEMA.fields if f.required == "resource_categories"]
    assert list(SCHEMA.resource_category_attributes) == needed
    assert needed == ["audit.resource.type", "audit.resource.id"]


@pytest.mark.parametrize(
    "lookup",
    [
        lambda: SCHEMA.path_of("no_such_role"),
        lambda: SCHEMA.attribute_of("no_such_role"),
        lambda: SCHEMA.constant("no_such_role"),
        lambda: SCHEMA.max_bytes_of("no_such_role"),
    ],
)
def test_a_missing_role_is_named(lookup: object) -> None:
    with pytest.raises(SchemaError, match="no_such_role"):
        lookup()  # type: ignore[operator]


def test_a_role_given_twice_is_refused() -> None:
    raw = copy.deepcopy(SCHEMA.raw)
    raw["derived_fields"][0]["role"] = "dataset"
    with pytest.raises(SchemaError, match="two fields have the role dataset"):
        _parse(raw)
