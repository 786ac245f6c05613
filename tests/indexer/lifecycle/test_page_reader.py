"""The native archive page reader gives exactly the page the Python reference gives.

``otel_audit_native.archive_page`` reads a raw ``_search`` response and writes each
event's sorted-key JSON (less ``integrity``), its leaf hash and the archived columns; what
it does not write itself (floats, unsafe integers, keys that sort differently by UTF-16
units, lone surrogates) it hands back to Python. Either way the page must be identical to
:func:`indexer.lifecycle.export._prepare`'s, value for value.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.lifecycle import export
from otel_audit.integrity import canonical_json_reference, document_for_hashing, leaf_hash
from receiver import native

pytestmark = [pytest.mark.lifecycle]


@pytest.fixture(scope="module")
def archive_page() -> export.PageReader:
    ext = native.module()
    if ext is None:
        pytest.skip(f"the native extension is not in use: {native.DESCRIPTION}")
    reader: export.PageReader = ext.archive_page
    return reader


def _response(sources: list[bytes]) -> bytes:
    """A ``_search`` response around raw ``_source`` texts, with the members ES adds."""
    hits = b",".join(
        b'{"_index":"audit-events-2026.01.01","_id":"e%d","_score":null,"_source":%s,'
        b'"sort":[%d]}' % (i, s, 1000 + i)
        for i, s in enumerate(sources)
    )
    return (
        b'{"pit_id":"x==","took":3,"timed_out":false,"_shards":{"total":1,"failed":0},'
        b'"hits":{"max_score":null,"hits":[' + hits + b"]}}"
    )


def _same(body: bytes, archive_page: export.PageReader) -> export._Page:
    want, want_sort = export._parse_page(body, None)
    got, got_sort = export._parse_page(body, archive_page)
    assert got.ids == want.ids
    assert got.leaves == want.leaves
    assert got_sort == want_sort
    for name in want.batch.schema.names:
        assert got.batch.column(name).to_pylist() == want.batch.column(name).to_pylist(), name
    assert got.batch.equals(want.batch)
    return got


AWKWARD = [
    # Unicode: escapes in the stored text, raw multi-byte text, characters JSON escapes.
    rb'{"message":"caf\u00e9 \ud83d\ude00 \u2028 \/ \"q\" \\ \b\f\n\r\t \u0001 \u001f \u007f",'
    rb'"@timestamp":"2026-01-01T00:00:00Z","event":{"action":"login"}}',
    '{"message":"h\u00e9llo \U0001f600 \u0800 \uffff","user":{"id":"\u00fc"}}'.encode(),
    # Integers: zero, negative zero, the safe limits; spaces around tokens.
    b'{ "n" : [0, -0, 9007199254740991, -9007199254740991, 12] , "b":[true,false,null] }',
    # A repeated key keeps its last value; integrity leaves the top level only.
    b'{"a":1,"a":2,"integrity":{"chain":"x"},"x":{"integrity":1},"event":{"action":"a",'
    b'"action":"b"}}',
    # Archived fields that are not strings: int, bool, null, object, list; missing parents.
    b'{"event":{"action":7},"audit":{"category":true,"outcome":null,"actor":{"type":{}},'
    b'"resource":"flat"},"user":{"id":["a"]},"service":{"name":false},"@timestamp":5}',
    b"{}",
    # Left to Python: floats, an unsafe integer, UTF-16 key order, nesting.
    b'{"amount":100.0,"event":{"action":"pay"}}',
    b'{"event":{"action":1.5}}',
    b'{"big":9007199254740992,"exp":1e21,"neg":-1E-7}',
    '{"\ue000":"private use","\U0001f600":"astral"}'.encode(),
    b'{"deep":' + b"[" * 250 + b"]" * 250 + b"}",
    b'{"trace":{"id":"abc"},"span":{"id":"def"},"organization":{"id":"o"}}',
]


def test_awkward_documents_give_the_reference_page(archive_page: export.PageReader) -> None:
    page = _same(_response(AWKWARD), archive_page)
    sources = page.batch.column("source").to_pylist()
    assert page.batch.column("event.action").to_pylist()[:5] == [
        "login",
        None,
        None,
        "b",
        "7",
    ]
    assert page.batch.column("audit.category").to_pylist()[4] == "True"
    assert b"integrity" not in sources[3].split(b',"x"')[0]
    for raw, source, leaf in zip(AWKWARD, sources, page.leaves, strict=True):
        assert leaf == leaf_hash(source)
        if raw.startswith((b'{"amount"', b'{"event":{"action":1.5', b'{"big"', b'{"\xee')):
            continue  # sorted-key JSON, corrected against the sealed leaf by the exporter
        if raw.startswith(b'{"deep"'):
            continue  # beyond orjson's nesting: the exporter's reference decides
        assert source == canonical_json_reference(document_for_hashing(orjson.loads(raw)))


def test_pages_with_no_hits_and_responses_that_are_not_searches(
    archive_page: export.PageReader,
) -> None:
    for body in (b'{"hits":{"hits":[]}}', b'{"took":1,"hits":{"total":0}}', b"{}"):
        page = _same(body, archive_page)
        assert page.ids == []
    with pytest.raises(export.ExportError, match="not as expected"):
        export._parse_page(b'{"hits":{"hits":[{"_source":{}}]}}', archive_page)
    with pytest.raises(export.ExportError, match="not as expected"):
        export._parse_page(b"[1]", archive_page)


def test_a_lone_surrogate_is_an_error_naming_the_event(archive_page: export.PageReader) -> None:
    body = _response([b'{"message":"\\ud800"}'])
    for reader in (None, archive_page):
        with pytest.raises(export.ExportError, match="cannot be read"):
            export._parse_page(body, reader)


_keys = st.text(st.characters(codec="utf-8"), max_size=6)
_scalars = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | _keys
_json: Any = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "event": st.fixed_dictionaries({}, optional={"action": _json}),
        "audit": st.fixed_dictionaries({}, optional={"category": _json, "actor": _json}),
        "@timestamp": _json,
        "integrity": _json,
    },
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_fields, st.dictionaries(_keys, _json, max_size=5)), max_size=6))
def test_random_documents_give_the_reference_page(
    archive_page: export.PageReader, docs: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    sources = [orjson.dumps({**extra, **fields}) for fields, extra in docs]
    _same(_response(sources), archive_page)


def test_native_leaf_hashes_are_the_leaf_hashes_of_each_value() -> None:
    """The read-back check's native hashing of the archived sources, a sliced column too."""
    import pyarrow as pa

    from indexer.lifecycle.archive import _leaves_of

    ext = native.module()
    if ext is None:
        pytest.skip(f"the native extension is not in use: {native.DESCRIPTION}")
    values = [b"", b"{}", "caf\u00e9".encode(), bytes(range(256)) * 5, b'{"a":1}']
    column = pa.array(values * 3, pa.binary())
    for part in (column, column.slice(4, 7), column.slice(15)):
        want = [leaf_hash(v) for v in part.to_pylist()]
        assert _leaves_of(part, ext.leaf_hashes) == want
        assert _leaves_of(part, None) == want
    with pytest.raises(ValueError, match="do not describe"):
        ext.leaf_hashes(b"\x00\x00\x00\x00\x10\x00\x00\x00", b"short", 1)


def test_native_leaf_hashes_read_arrow_buffers_in_place() -> None:
    """The read-back check hands the events file's own Arrow buffers (and a memoryview of
    the offsets of a sliced column) to the native hashing, without copying them first; a
    buffer that is not contiguous is refused."""
    import pyarrow as pa

    ext = native.module()
    if ext is None:
        pytest.skip(f"the native extension is not in use: {native.DESCRIPTION}")
    values = [b"", b"{}", bytes(range(256)) * 3, b'{"a":1}'] * 4
    part = pa.array(values, pa.binary()).slice(3, 9)
    _, offsets, data = part.buffers()
    ends = memoryview(offsets)[part.offset * 4 : (part.offset + len(part) + 1) * 4]
    flat = ext.leaf_hashes(ends, data, len(part))
    assert flat == b"".join(leaf_hash(v) for v in part.to_pylist())
    assert flat == ext.leaf_hashes(bytes(ends), data.to_pybytes(), len(part))
    with pytest.raises(ValueError, match="contiguous"):
        ext.leaf_hashes(memoryview(bytes(ends))[::2], data, len(part))
