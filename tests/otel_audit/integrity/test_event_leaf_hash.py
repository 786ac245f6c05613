"""The sealer's fast leaf hash equals RFC 8785 for every document the builder produces."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from otel_audit.document import build_document, build_document_and_plainness
from otel_audit.integrity import (
    CanonicalizationError,
    canonical_json_reference,
    document_for_hashing,
    leaf_hash,
    leaf_hash_of_event,
)
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.validate import validate
from tests.otel_audit.integrity.test_canonical_json import SPECIAL_CHARS, special_floats
from tests.otel_audit.test_validate_property import NOW, mostly_valid_records, values
from tests.otel_audit.test_validate_table import BASE_ATTRS

SCHEMA = load_schema()

# Keys that sort differently under UTF-16 (RFC 8785) and code points (orjson) included.
wild_keys = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["\ue000", "\uffff", "\U0001f600", "\U00010000", "a\ue000", "a\U0001f600"]),
    st.lists(st.sampled_from(SPECIAL_CHARS), min_size=1, max_size=3).map("".join),
)
wild_values = st.one_of(values, special_floats, st.lists(special_floats, max_size=3))


@st.composite
def built_documents(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """A document the builder made, with its plainness, from records with wild extras."""
    record: LogRecordData = draw(mostly_valid_records())
    record.attributes.update(draw(st.dictionaries(wild_keys, wild_values, max_size=5)))
    record.resource = {
        **draw(st.dictionaries(wild_keys, wild_values, max_size=4)),
        "service.name": "billing",
    }
    if validate(record, now_ns=NOW):
        event("invalid record")
        return build_document_and_plainness(_core_only(record), received_ns=NOW)
    event("valid record with wild extras")
    return build_document_and_plainness(record, received_ns=NOW)


def stored_documents() -> st.SearchStrategy[dict[str, Any]]:
    return built_documents().map(lambda built: built[0])


def _core_only(record: LogRecordData) -> LogRecordData:
    """The record without its generated extras (which made it invalid): still a document."""
    known = SCHEMA.by_attribute
    record.attributes = {k: v for k, v in record.attributes.items() if k in known}
    record.resource = {"service.name": "billing", "k\ue000": 1.0, "k\U0001f600": 2.5e-7}
    return record


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stored_documents())
@example(
    build_document(
        LogRecordData(
            attributes={**BASE_ATTRS, "amount": 10.0, "\U0001f600": 1e21, "\ue000": -0.0},
            resource={"service.name": "billing", "weight": 5e-324},
            time_unix_nano=NOW,
        ),
        received_ns=NOW,
    )
)
def test_event_leaf_hash_is_rfc8785_for_built_documents(doc: dict[str, Any]) -> None:
    try:
        expected = leaf_hash(canonical_json_reference(document_for_hashing(doc)))
    except CanonicalizationError:
        raise AssertionError("the builder made a document RFC 8785 cannot encode") from None
    assert leaf_hash_of_event(doc) == expected
    # The receiver passes the sorted-key bytes it sent to Elasticsearch.
    assert leaf_hash_of_event(doc, orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)) == expected


def test_keys_that_sort_differently_take_the_exact_path() -> None:
    # U+E000 sorts after U+1F600 by code point (orjson) but before it by UTF-16 code unit
    # (RFC 8785); flat objects of plain strings with such keys must still hash exactly.
    keys = {"\ue000": "a", "\U0001f600": "b", "z": True, "n": None, "i": 7}
    doc = build_document(
        LogRecordData(
            attributes={**BASE_ATTRS, **keys},
            resource={"service.name": "billing", **keys},
            time_unix_nano=NOW,
        ),
        received_ns=NOW,
    )
    assert set(doc["audit"]["extra"]) == set(keys)
    assert set(keys) <= set(doc["audit"]["origin"]["resource"])
    sorted_json = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    expected = leaf_hash(canonical_json_reference(document_for_hashing(doc)))
    assert leaf_hash(sorted_json) != expected  # the bytes really differ here
    assert leaf_hash_of_event(doc) == expected
    assert leaf_hash_of_event(doc, sorted_json) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(built_documents())
def test_a_plain_document_hashes_as_its_sorted_key_bytes(
    built: tuple[dict[str, Any], bool],
) -> None:
    # The sealing write path hashes a plain document's sorted-key bytes without checks.
    doc, plain = built
    event(f"plain={plain}")
    sorted_json = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    expected = leaf_hash(canonical_json_reference(document_for_hashing(doc)))
    if plain:
        assert leaf_hash(sorted_json) == expected
    assert leaf_hash_of_event(doc, sorted_json, plain=plain) == expected


@pytest.mark.parametrize(
    ("extra", "resource", "plain"),
    [
        ({"tenant": "t1", "code": 200, "ok": True, "none": None}, {"host.arch": "x86"}, True),
        ({"big": 2**60}, {}, True),  # stored as a string
        ({"ratio": 0.5}, {}, False),
        ({"tags": ["a"]}, {}, False),
        ({"k\u00e9": "v"}, {}, False),
        ({}, {"pid": 1.0}, False),
        ({}, {"r\u00e9gion": "eu"}, False),
        ({}, {"labels": {"a": "b"}}, False),
    ],
)
def test_plainness_of_typical_and_unusual_records(
    extra: dict[str, Any], resource: dict[str, Any], plain: bool
) -> None:
    record = LogRecordData(
        attributes={**BASE_ATTRS, **extra},
        resource={"service.name": "billing", **resource},
        time_unix_nano=NOW,
    )
    doc, answer = build_document_and_plainness(record, received_ns=NOW)
    assert answer is plain
    assert doc == build_document(record, received_ns=NOW)
