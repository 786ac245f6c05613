"""RFC 8785 canonical JSON: the orjson fast path must equal the reference byte for byte."""

from __future__ import annotations

import math
import os
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st

from otel_audit.integrity import (
    CanonicalizationError,
    canonical_json,
    canonical_json_reference,
    document_for_hashing,
    fast_path_applies,
    leaf_hash,
    leaf_hash_of_document,
    leaf_hash_of_event,
)

# Raise for a long run, e.g. OTEL_AUDIT_PROPERTY_SCALE=100.
SCALE = int(os.environ.get("OTEL_AUDIT_PROPERTY_SCALE", "1"))

SPECIAL_CHARS = [
    "\u2028", "\u2029", "</", "<script>", "\\", '"', "\x7f", "\x00", "\x1f", "\b", "\f",
    "\n", "\r", "\t", "/", "\ud7ff", "\ue000", "\uffff", "\ufeff", "\U0001f600",
    "\U0010ffff", "é", "\u0301", "😀🇪🇺",
]  # fmt: skip

# Every code point except lone surrogates (which no JSON text can carry in UTF-8).
any_char = st.characters(exclude_categories=("Cs",))
text = st.one_of(
    st.text(any_char, max_size=12),
    st.lists(st.sampled_from(SPECIAL_CHARS), max_size=4).map("".join),
)
special_floats = st.sampled_from(
    [
        0.0, -0.0, 1.0, -1.0, 0.5, 1e21, 1e20, 1e-7, 1e-6, 5e-324, -5e-324,
        1.7976931348623157e308, 2.2250738585072014e-308, 1e-5, 9.999999999999999e-6,
        1.0000000000000002e-5, 1e15, 999999999999999.9, 1e15 + 0.5, 2.0**53, 2.0**53 + 2,
        123456789.123, 0.1, 0.2 + 0.1, 1.5e-6, 333333333.33333329, 1e16, 1.5e300,
    ]
)  # fmt: skip
floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False), special_floats)
safe_ints = st.integers(-(2**53) + 1, 2**53 - 1)
scalars = st.one_of(st.none(), st.booleans(), safe_ints, floats, text)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(text, children, max_size=5)
    ),
    max_leaves=30,
)
# Values the fast path accepts, so that its claim is exercised on every example.
fast_floats = st.floats(min_value=1e-5, max_value=1e15, exclude_max=True).filter(
    lambda x: not x.is_integer()
)
fast_scalars = st.one_of(
    st.none(), st.booleans(), safe_ints, fast_floats, fast_floats.map(lambda x: -x), text
)
fast_values = st.recursive(
    fast_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.text(st.characters(max_codepoint=0xDFFF, exclude_categories=("Cs",)), max_size=8),
            children,
            max_size=5,
        ),
    ),
    max_leaves=30,
)


@settings(max_examples=250 * SCALE, deadline=None)
@given(json_values)
@example({"\ue000": 1, "\U0001f600": 2, "a": 3})
@example({"\uffff": [1e21, 1.0, -0.0], "\U00010000": {"</": "\u2028"}})
@example([2**53 - 1, -(2**53) + 1, 1e-7, 5e-324, 1e21])
def test_canonical_json_equals_reference(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=250 * SCALE, deadline=None)
@given(fast_values)
def test_fast_path_is_byte_identical_whenever_taken(value: Any) -> None:
    assert fast_path_applies(value)
    assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == rfc8785.dumps(value)
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=600 * SCALE, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-2e15, max_value=2e15))
@example(math.nextafter(1e-5, 0.0))
@example(math.nextafter(1e-5, 1.0))
@example(math.nextafter(1e15, 0.0))
def test_floats_in_the_fast_range(x: float) -> None:
    for value in (x, x / 1e10, [x], {"k": -x}):
        assert canonical_json(value) == rfc8785.dumps(value)
        if fast_path_applies(value):
            assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == rfc8785.dumps(value)


@settings(max_examples=100 * SCALE, deadline=None)
@given(st.dictionaries(text, st.integers(0, 9), min_size=2, max_size=8))
def test_key_order_is_utf16(value: dict[str, int]) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


def test_key_order_differs_from_code_point_order_and_falls_back() -> None:
    value = {"\ue000": 1, "\U0001f600": 2}
    # UTF-16: U+1F600 is D83D DE00, which sorts before E000.
    assert canonical_json(value) == '{"\U0001f600":2,"\ue000":1}'.encode()
    assert not fast_path_applies(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, b"1"),
        (-0.0, b"0"),
        (1e21, b"1e+21"),
        (1e20, b"100000000000000000000"),
        (1e-7, b"1e-7"),
        (1.5e-6, b"0.0000015"),
        (5e-324, b"5e-324"),
        (2**53 - 1, b"9007199254740991"),
        ("\u2028</\x1f", b'"\xe2\x80\xa8</\\u001f"'),
    ],
)
def test_ecmascript_number_and_string_forms(value: Any, expected: bytes) -> None:
    assert canonical_json(value) == expected


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (2**53, "must be stored as strings"),
        (-(2**53), "must be stored as strings"),
        ({"n": 2**64}, "must be stored as strings"),
        (float("nan"), "NaN or infinity"),
        ([float("inf")], "NaN or infinity"),
        ({"s": "\ud800"}, "non-UTF-8"),
        ({1: "x"}, "keys must be strings"),
        ({"b": b"bytes"}, "unsupported type"),
        ({"s": {1, 2}}, "unsupported type"),
    ],
)
def test_values_outside_jcs_raise_a_clear_error(value: Any, match: str) -> None:
    with pytest.raises(CanonicalizationError, match=match):
        canonical_json(value)


def test_deep_nesting_raises_canonicalization_error() -> None:
    value: Any = "leaf"
    for _ in range(5000):
        value = [value]
    with pytest.raises(CanonicalizationError, match="nested too deeply"):
        canonical_json(value)


def test_moderate_nesting_beyond_orjson_limit_uses_reference() -> None:
    value: Any = 1
    for _ in range(300):
        value = {"a": value}
    assert canonical_json(value) == rfc8785.dumps(value)


def test_typical_document_takes_the_fast_path(event_document: dict[str, Any]) -> None:
    body = document_for_hashing(event_document)
    assert fast_path_applies(body)
    assert canonical_json(body) == rfc8785.dumps(body)
    assert 900 < len(canonical_json(body)) < 1600


def test_leaf_hash_of_document_excludes_integrity(event_document: dict[str, Any]) -> None:
    h = leaf_hash_of_document(event_document)
    without = {k: v for k, v in event_document.items() if k != "integrity"}
    assert h == leaf_hash(rfc8785.dumps(without))
    # The seal's own fields do not change the hash; any event field does.
    event_document["integrity"] = {"block": 99}
    assert leaf_hash_of_document(event_document) == h
    event_document["event"]["outcome"] = "failure"
    assert leaf_hash_of_document(event_document) != h
    assert leaf_hash_of_document(event_document, exclude=()) != leaf_hash_of_document(
        event_document
    )


def test_key_insertion_order_does_not_matter() -> None:
    a = {"b": 1, "a": {"y": 2, "x": [3, {"q": None, "p": True}]}}
    b = {"a": {"x": [3, {"p": True, "q": None}], "y": 2}, "b": 1}
    assert (
        canonical_json(a) == canonical_json(b) == b'{"a":{"x":[3,{"p":true,"q":null}],"y":2},"b":1}'
    )


def test_non_mapping_document_is_rejected() -> None:
    with pytest.raises(CanonicalizationError, match="must be an object"):
        leaf_hash_of_document(["not", "a", "dict"])  # type: ignore[arg-type]


def test_subclasses_and_tuples_go_to_the_reference() -> None:
    class S(str):
        pass

    value = {"t": (1, 2), "s": S("x")}
    assert not fast_path_applies(value)
    assert canonical_json(value) == canonical_json_reference(value) == b'{"s":"x","t":[1,2]}'


@given(st.dictionaries(text, json_values, max_size=6))
@settings(max_examples=300 * SCALE, deadline=None)
@example({"a": 1.0, "b": "…", "c": 2**53 - 1})
@example({"n": -0.0, "big": 123456789012345678})
@example({"integrity": {"block": 1}, "k\ue000": "x", "l": [1e21, 5e-324]})
@example({"audit": {"extra": {"f": 1.0}, "origin": {"resource": {"\U0001f600": 1, "\ue000": 2}}}})
@example({"audit": {"extra": "not an object"}, "v": 1e21})
@example({"audit": {"origin": 3}})
def test_leaf_hash_of_event_never_hides_a_difference(doc: dict[str, Any]) -> None:
    # For any document (a verifier reads edited ones too), the bytes hashed are either
    # RFC 8785 or orjson's faithful encoding of that same document: a match with a sealed
    # leaf therefore means the same JSON value. Documents shaped like stored events with
    # clean free-form parts take the fast path and must then be exactly RFC 8785.
    try:
        expected = leaf_hash_of_document(doc)
    except CanonicalizationError:
        with pytest.raises(CanonicalizationError):
            leaf_hash_of_event(doc)
        return
    got = leaf_hash_of_event(doc)
    if got != expected:
        encoded = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        assert got == leaf_hash(encoded)
        assert orjson.loads(encoded) == doc
        # Only values outside the free-form parts can make the bytes differ.
        audit = doc.get("audit")
        assert type(audit) is dict
        assert fast_path_applies(audit.get("extra")) or audit.get("extra") is None
    # Given the caller's own sorted bytes, the answer is the same.
    try:
        encoded = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return
    assert leaf_hash_of_event(doc, encoded) == got
