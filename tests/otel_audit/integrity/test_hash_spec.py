"""docs/hashing.md, tested: its vectors, and every fast path equal to the reference.

The vectors (``testdata/hashing/*.json``) hold, per input, the canonical bytes and their
hashes; each is checked against the ``rfc8785`` reference and against every
implementation that can take the input. The properties then prove, on generated input,
that each fast path gives the reference's bytes whenever it claims an input and declines
whenever its bytes would differ:

- the leaf hash: ``canonical_json``'s orjson path, ``leaf_hash_of_event`` (with and without
  the builder's word that a document is plain), the verifier's re-hash of ``_source``
  (``indexer.integrity.leaf_scan.hash_hits``) and the native decoder's prepared leaves;
- the content hash: ``content_json``'s orjson path, and the native decoder's hash.

They also pin where the content hash's earlier definition (orjson's sorted-key bytes)
differs from RFC 8785: exactly the records the specification lists, and no others.
``OTEL_AUDIT_PROPERTY_SCALE=N`` multiplies the number of generated cases.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import struct
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from indexer.integrity.leaf_scan import hash_hits
from otel_audit.document import build_document_and_plainness, content_hash
from otel_audit.integrity import (
    CanonicalizationError,
    canonical_json,
    content_fast_path_applies,
    content_json,
    content_json_reference,
    content_sha256,
    content_value,
    document_for_hashing,
    fast_path_applies,
    leaf_hash,
    leaf_hash_of_document,
    leaf_hash_of_event,
)
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.validate import validate
from receiver import native
from receiver.ingest.prepare import native_plan
from receiver.otlp import decode
from tests.otel_audit.integrity.test_canonical_json import SPECIAL_CHARS, special_floats
from tests.otel_audit.test_validate_table import BASE_ATTRS
from tests.support.front_harness import any_value, kv

SCALE = int(os.environ.get("OTEL_AUDIT_PROPERTY_SCALE", "1"))
VECTORS = Path(__file__).parent / "testdata" / "hashing"
_SORT = orjson.OPT_SORT_KEYS

needs_native = pytest.mark.skipif(
    native.module() is None, reason=f"no native decoder: {native.DESCRIPTION}"
)


# --- helpers ---------------------------------------------------------------------------------


def _test_value(obj: dict[str, Any]) -> Any:
    """The vectors' JSON inputs write bytes as ``{"$test.hex": ...}`` (JSON has none)."""
    if set(obj) == {"$test.hex"}:
        return bytes.fromhex(obj["$test.hex"])
    return obj


def _parse(text: str) -> Any:
    """A vector's input: Python's json keeps integers exact and reads NaN, -0.0 and lone
    surrogate escapes, which the vectors need."""
    return json.loads(text, object_hook=_test_value)


def _vectors(name: str) -> list[Any]:
    vectors = json.loads((VECTORS / name).read_text("utf-8"))["vectors"]
    return [pytest.param(v, id=v["name"]) for v in vectors]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _orjson_sorted(value: Any) -> bytes | None:
    """The earlier content hash's bytes (orjson sorted keys, bytes as ``$bytes``)."""
    try:
        return orjson.dumps(value, option=_SORT, default=_bytes)
    except (orjson.JSONEncodeError, TypeError):
        return None


def _bytes(value: bytes) -> dict[str, str]:
    return {"$bytes": base64.b64encode(value).decode("ascii")}


def _rfc8785_exact_ints(value: Any) -> bytes:
    """RFC 8785 with integers written exactly, built from ``rfc8785`` alone: each integer
    it refuses is replaced by a unique string, whose canonical form is then swapped for the
    digits (values do not take part in key order)."""
    token = uuid.uuid4().hex
    swaps: dict[bytes, bytes] = {}

    def mark(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mark(x) for x in v]
        if type(v) is int and abs(v) > 2**53 - 1:
            placeholder = f"{token}:{v}"
            swaps[rfc8785.dumps(placeholder)] = str(v).encode()
            return placeholder
        return v

    out = rfc8785.dumps(mark(value))
    for placeholder, digits in swaps.items():
        out = out.replace(placeholder, digits)
    return out


def _float_differs(x: float) -> bool:
    """Where orjson's number form is not RFC 8785's (docs/hashing.md lists the same)."""
    if not math.isfinite(x):
        return True
    if x.is_integer():
        return abs(x) < 1e21  # orjson: 10.0, -0.0, 1e+16; RFC 8785: 10, 0, 10000000000000000
    return 1e-6 <= abs(x) < 1e-5  # orjson: 1.5e-6; RFC 8785: 0.0000015


def _keys_differ(keys: list[str]) -> bool:
    return sorted(keys) != sorted(keys, key=lambda k: k.encode("utf-16be", "surrogatepass"))


def _orjson_deviation(value: Any) -> bool:
    """Whether ``value`` holds anything on which orjson's sorted-key bytes and RFC 8785
    (with exact integers) disagree."""
    if isinstance(value, float):
        return _float_differs(value)
    if isinstance(value, dict):
        return _keys_differ(list(value)) or any(_orjson_deviation(v) for v in value.values())
    if isinstance(value, list):
        return any(_orjson_deviation(v) for v in value)
    return False


def _has(value: Any, check: Any) -> bool:
    if check(value):
        return True
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return False
    return any(_has(v, check) for v in value)


def _key_orders_may_differ(value: Any) -> bool:
    """The native content hash's test: an object with keys above U+FFFF and in U+E000..U+FFFF."""

    def mixed(v: Any) -> bool:
        if not isinstance(v, dict):
            return False
        joined = "".join(v)
        return any(c > "\uffff" for c in joined) and any("\ue000" <= c <= "\uffff" for c in joined)

    return _has(value, mixed)


def _request_of(record: LogRecordData) -> bytes:
    """An OTLP protobuf request carrying ``record`` (its values as the decoder reads them)."""
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.extend(kv(k, v) for k, v in record.resource.items())
    sl = rl.scope_logs.add()
    sl.scope.name = record.scope_name
    sl.scope.version = record.scope_version
    lr = sl.log_records.add(
        time_unix_nano=record.time_unix_nano,
        observed_time_unix_nano=record.observed_time_unix_nano,
        severity_number=record.severity_number,
        severity_text=record.severity_text,
        flags=record.flags,
        event_name=record.event_name,
        trace_id=bytes.fromhex(record.trace_id),
        span_id=bytes.fromhex(record.span_id),
    )
    if record.body is not None:
        lr.body.CopyFrom(any_value(record.body))
    lr.attributes.extend(kv(k, v) for k, v in record.attributes.items())
    return bytes(request.SerializeToString())


def _native_records(body: bytes) -> list[LogRecordData]:
    decoded = decode._decode_logs_protobuf_native(body)
    return list(decoded.records) + list(decoded.rejected)


def _hit(source: Any) -> dict[str, Any]:
    return {"_id": "e", "_index": "audit-events-x", "_source": source}


def _check_verifier(doc: dict[str, Any], expected: bytes) -> None:
    """The verifier hashes ``_source`` as parsed from Elasticsearch's response, whose text
    need not be the bytes written: any faithful JSON text of the document must do."""
    texts = [orjson.dumps(doc), json.dumps(doc, indent=1, ensure_ascii=True).encode()]
    for text in texts:
        assert hash_hits([_hit(orjson.loads(text))])[2] == [expected]


# --- the vectors -----------------------------------------------------------------------------


def test_the_vectors_cover_every_file() -> None:
    assert sorted(p.name for p in VECTORS.glob("*.json")) == [
        "content.json",
        "jcs.json",
        "leaf.json",
    ]


@pytest.mark.parametrize("vector", _vectors("jcs.json"))
def test_rfc8785_vector(vector: dict[str, Any]) -> None:
    value = _parse(vector["input"])
    if "f64_bits" in vector:
        assert struct.pack(">d", value).hex() == vector["f64_bits"]
    if "error" in vector:
        with pytest.raises(rfc8785.CanonicalizationError):
            rfc8785.dumps(value)
        with pytest.raises(CanonicalizationError):
            canonical_json(value)
        return
    expected = vector["canonical"].encode("utf-8")
    assert rfc8785.dumps(value) == expected
    assert _sha256(expected) == vector["sha256"]
    assert leaf_hash(expected).hex() == vector["leaf_hash"]
    assert hashlib.sha256(b"\x00" + expected).hexdigest() == vector["leaf_hash"]
    assert canonical_json(value) == expected
    # Within I-JSON the content hash's serialization is RFC 8785 itself.
    assert content_json(value) == content_json_reference(value) == expected
    sorted_json = _orjson_sorted(value)
    if fast_path_applies(value) or content_fast_path_applies(value):
        assert sorted_json == expected
    if sorted_json != expected:
        assert not fast_path_applies(value)
        assert not content_fast_path_applies(value)


@pytest.mark.parametrize("vector", _vectors("content.json"))
def test_content_hash_vector(vector: dict[str, Any]) -> None:
    record = LogRecordData(**_parse(vector["record"]))
    wire = record.as_wire_dict()
    expected = vector["canonical"].encode("utf-8")
    assert content_json_reference(wire) == expected
    assert _rfc8785_exact_ints(content_value(wire)) == expected
    assert content_json(wire) == expected
    assert content_sha256(wire) == vector["sha256"] == _sha256(expected)

    sorted_json = _orjson_sorted(wire)
    assert (sorted_json == expected) is vector["orjson_sorted_keys_equal"]
    assert (sorted_json == expected) is not _orjson_deviation(wire)
    if content_fast_path_applies(wire):
        assert sorted_json == expected
    assert content_hash(record) == vector["sha256"]


def test_the_receiver_hashes_records_as_specified() -> None:
    vectors = json.loads((VECTORS / "content.json").read_text("utf-8"))["vectors"]
    for vector in vectors:
        record = LogRecordData(**_parse(vector["record"]))
        assert content_hash(record) == vector["sha256"], vector["name"]


@needs_native
@pytest.mark.parametrize("vector", _vectors("content.json"))
def test_native_content_hash_vector(vector: dict[str, Any]) -> None:
    record = LogRecordData(**_parse(vector["record"]))
    (decoded,) = _native_records(_request_of(record))
    assert decoded.as_wire_dict() == record.as_wire_dict() or _has(
        record.as_wire_dict(), lambda v: isinstance(v, float) and v != v
    )
    wire = record.as_wire_dict()
    if _has(wire, lambda v: isinstance(v, float)) or _key_orders_may_differ(wire):
        assert decoded.content_sha256 is None
    else:
        assert decoded.content_sha256 == vector["sha256"]


@pytest.mark.parametrize("vector", _vectors("leaf.json"))
def test_leaf_hash_vector(vector: dict[str, Any]) -> None:
    doc = json.loads(vector["document"])
    expected = vector["canonical"].encode("utf-8")
    leaf = bytes.fromhex(vector["leaf_hash"])
    assert rfc8785.dumps(document_for_hashing(doc)) == expected
    assert _sha256(expected) == vector["sha256"]
    assert leaf_hash(expected) == leaf
    assert leaf_hash_of_document(doc) == leaf
    assert leaf_hash_of_event(doc) == leaf
    written = document_for_hashing(doc)  # as the receiver wrote it: no integrity field yet
    sorted_json = orjson.dumps(written, option=_SORT)
    assert leaf_hash_of_event(written, sorted_json) == leaf
    assert (sorted_json == expected) is vector["orjson_sorted_keys_equal"]
    if vector["orjson_sorted_keys_equal"]:
        assert leaf_hash_of_event(written, sorted_json, plain=True) == leaf
    _check_verifier(doc, leaf)


# --- generated values: canonical JSON --------------------------------------------------------

_any_char = st.characters(exclude_categories=("Cs",))
_text = st.one_of(
    st.text(_any_char, max_size=10),
    st.lists(st.sampled_from(SPECIAL_CHARS), max_size=4).map("".join),
)
# Few distinct keys, with the ones code point and UTF-16 order disagree on among them.
_keys = st.one_of(
    st.sampled_from(["", "a", "B", "é", "\ue000", "\uffff", "\U0001f600", "\U00010000", "k\ue000"]),
    _text,
)
_floats = st.one_of(
    st.floats(),
    special_floats,
    st.sampled_from([1.5e-6, 9.999999999999999e-6, 1e-6, 1e16, 1e20, -1e20, 123.0]),
)
_ints = st.one_of(
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([2**53 - 1, 2**53, -(2**63), 2**64 - 1]),
)
_scalars = st.one_of(st.none(), st.booleans(), _ints, _floats, _text)
_json = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_keys, children, max_size=4)
    ),
    max_leaves=16,
)


@settings(max_examples=1000 * SCALE, deadline=None)
@given(_json)
@example({"\ue000": 1, "\U0001f600": [1.0, -0.0, 1.5e-6, 1e16, 2**53]})
@example([float("nan"), 2**64 - 1, -(2**63)])
def test_json_values(value: Any) -> None:
    sorted_json = _orjson_sorted(value)
    # The leaf hash's canonical JSON: RFC 8785, refusing what it cannot represent.
    try:
        expected: bytes | None = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        expected = None
        with pytest.raises(CanonicalizationError):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected
    if fast_path_applies(value):
        assert sorted_json == expected is not None
    if sorted_json != expected:
        assert not fast_path_applies(value)

    # The content hash's serialization: RFC 8785 with exact integers and tagged doubles,
    # the same bytes as RFC 8785 wherever RFC 8785 has an answer.
    exact = content_json_reference(value)
    assert exact == _rfc8785_exact_ints(content_value(value))
    assert content_json(value) == exact
    if expected is not None:
        assert exact == expected
    if content_fast_path_applies(value):
        assert sorted_json == exact
    if sorted_json != exact:
        assert not content_fast_path_applies(value)
    # orjson's bytes differ exactly where docs/hashing.md says they do.
    assert (sorted_json != exact) is _orjson_deviation(value)


# --- generated records: the content hash -----------------------------------------------------

_values = st.recursive(
    st.one_of(_scalars, st.binary(max_size=6)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(_keys, children, max_size=3)
    ),
    max_leaves=10,
)
_hex = st.sampled_from(["", "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "0102"])
# The record's own strings: their characters are the values' business; a few suffice here.
_field_text = st.sampled_from(["", "INFO", 'q"\\/', "\u2028\x00\x1f\x7f", "\U0001f600\ue000", "é"])
_records = st.builds(
    LogRecordData,
    attributes=st.dictionaries(_keys, _values, max_size=5),
    resource=st.dictionaries(_keys, _values, max_size=3),
    time_unix_nano=st.integers(0, 2**64 - 1),
    observed_time_unix_nano=st.integers(0, 2**64 - 1),
    severity_number=st.integers(-(2**31), 2**31 - 1),
    severity_text=_field_text,
    body=st.none() | _values,
    trace_id=_hex,
    span_id=_hex,
    flags=st.integers(0, 2**32 - 1),
    event_name=_field_text,
    scope_name=_field_text,
    scope_version=_field_text,
)


@settings(max_examples=600 * SCALE, deadline=None)
@given(_records)
def test_generated_records_content_hash(record: LogRecordData) -> None:
    wire = record.as_wire_dict()
    exact = content_json_reference(wire)
    assert exact == _rfc8785_exact_ints(content_value(wire))
    assert content_json(wire) == exact
    assert content_sha256(wire) == _sha256(exact)
    sorted_json = _orjson_sorted(wire)
    if content_fast_path_applies(wire):
        assert sorted_json == exact
    # The earlier definition (orjson's bytes) gives the same hash to every record except
    # those docs/hashing.md lists, and content_hash() agrees wherever it does.
    assert (sorted_json != exact) is _orjson_deviation(wire)
    if sorted_json == exact:
        assert content_hash(record) == _sha256(exact)


@needs_native
@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_records.filter(lambda r: all(-(2**63) <= v < 2**63 for v in _ints_in(r))))
def test_native_content_hash_of_generated_records(record: LogRecordData) -> None:
    # The native decoder's hash of the same record sent as protobuf: the specified hash,
    # or none where it declines (a double, or keys it may not order as RFC 8785 does).
    (decoded,) = _native_records(_request_of(record))
    wire = decoded.as_wire_dict()
    if _has(wire, lambda v: isinstance(v, float)) or _key_orders_may_differ(wire):
        assert decoded.content_sha256 is None
    else:
        assert decoded.content_sha256 == _sha256(content_json_reference(wire))
        assert decoded.content_sha256 == content_sha256(record.as_wire_dict())


def _ints_in(record: LogRecordData) -> list[int]:
    """The integers an AnyValue must carry as int64."""
    found: list[int] = []

    def walk(v: Any) -> None:
        if type(v) is int:
            found.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk([record.attributes, record.resource, record.body])
    return found


# --- generated stored documents: the leaf hash -----------------------------------------------

# Keys the validator accepts (no control characters, no empty or dotted ends), with the
# ones whose code point and UTF-16 orders disagree among them.
_doc_keys = st.one_of(
    st.sampled_from(["a", "B", "é", "\ue000", "\uffff", "\U0001f600", "\U00010000", "k\ue000"]),
    st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=8),
)
_doc_values = st.recursive(
    st.one_of(_scalars, st.binary(max_size=6)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(_doc_keys, children, max_size=3)
    ),
    max_leaves=10,
)
_NOW = 1_767_225_600_000_000_000


@st.composite
def _stored_documents(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """What the receiver's builder makes of a valid record with free-form values of every
    kind (the only place where values and keys of the emitter's choosing go), and whether
    it calls the document plain."""
    record = LogRecordData(
        attributes={**draw(st.dictionaries(_doc_keys, _doc_values, max_size=4)), **BASE_ATTRS},
        resource={**draw(st.dictionaries(_doc_keys, _doc_values, max_size=3)), "service.name": "b"},
        time_unix_nano=_NOW - draw(st.integers(0, 10**12)),
        observed_time_unix_nano=draw(st.sampled_from([0, _NOW])),
        severity_text=draw(st.sampled_from(["", "INFO", "\u2028\U0001f600"])),
        body=draw(st.sampled_from([None, "invoice updated", b"\x00", {"k": [1.5]}])),
        trace_id=draw(st.sampled_from(["", "4bf92f3577b34da6a3ce929d0e0e4736"])),
        span_id="00f067aa0ba902b7",
        flags=draw(st.sampled_from([0, 1, 257])),
        event_name=draw(st.sampled_from(["", "audit", "\ue000"])),
    )
    assume(not validate(record, now_ns=_NOW))
    return build_document_and_plainness(record, received_ns=_NOW)


@settings(max_examples=400 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_stored_documents())
def test_generated_documents_leaf_hash(built: tuple[dict[str, Any], bool]) -> None:
    doc, plain = built
    expected = leaf_hash(rfc8785.dumps(document_for_hashing(doc)))
    sorted_json = orjson.dumps(doc, option=_SORT)
    assert leaf_hash_of_document(doc) == expected
    assert leaf_hash_of_event(doc) == expected
    assert leaf_hash_of_event(doc, sorted_json) == expected
    # The builder's word: a plain document's sorted-key bytes are its RFC 8785 form.
    assert leaf_hash_of_event(doc, sorted_json, plain=plain) == expected
    if plain or fast_path_applies(doc):
        assert leaf_hash(sorted_json) == expected
    _check_verifier(doc, expected)
    sealed = {**doc, "integrity": {"chain_id": "c", "block": 1, "leaf_index": 0}}
    assert leaf_hash_of_event(sealed) == expected
    assert hash_hits([_hit(sealed)])[2] == [expected]


_PLAN: list[Any] = []


def _leaf_plan() -> Any:
    if not _PLAN:
        _PLAN.append(native_plan(load_schema(), leaf=True))
    return _PLAN[0]


@needs_native
def test_native_prepared_leaves() -> None:
    from tests.receiver.ingest.test_prepare_native import _requests

    plan = _leaf_plan()
    assert plan is not None
    prepared = 0

    @settings(
        max_examples=100 * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_requests())
    def leaves_are_rfc8785(request: tuple[bytes, int]) -> None:
        nonlocal prepared
        body, received_ns = request
        for record in decode.decode_logs_protobuf(body, plan, received_ns).records:
            if record.prepared is None:
                continue
            prepared += 1
            _index, _id, encoded, source_at, _sha, leaf, _ts = record.prepared
            doc = orjson.loads(encoded[source_at:-1])
            assert leaf == leaf_hash(rfc8785.dumps(document_for_hashing(doc)))
            assert hash_hits([_hit(doc)])[2] == [leaf]

    leaves_are_rfc8785()
    assert prepared > 50 * SCALE  # the native path really was exercised
