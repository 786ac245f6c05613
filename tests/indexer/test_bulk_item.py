"""BulkItem on its own: serialized once, and still readable after it lets go of the dict."""

from __future__ import annotations

import time

import orjson

from indexer.bulk import BulkItem, PreEncodedNdjson
from indexer.indices import event_index
from otel_audit.document import build_document, content_hash
from otel_audit.emit import new_event_id
from otel_audit.record import LogRecordData
from receiver.ingest.router import decode_frame, encode_frame


def _item(*, sort_keys: bool = False) -> BulkItem:
    record = LogRecordData(
        attributes={
            "audit.action": "user.login",
            "audit.category": "authentication",
            "audit.outcome": "success",
            "audit.actor.id": "u-1",
            "audit.event.id": new_event_id(),
            "zeta": 1.5,
            "alpha": "ü",
        },
        resource={"service.name": "auth"},
        time_unix_nano=time.time_ns(),
    )
    sha = content_hash(record)
    doc = build_document(record, received_ns=time.time_ns(), content_sha256=sha)
    return BulkItem(
        event_index(record.time_unix_nano), doc["event"]["id"], doc, sha, record, sort_keys
    )


def test_compact_keeps_the_bytes_sent_and_the_document() -> None:
    for sort_keys in (False, True):
        item = _item(sort_keys=sort_keys)
        doc = item.document
        sent = item.encoded()
        item.compact()
        assert item.encoded() == sent
        assert item.document == doc
        option = orjson.OPT_SORT_KEYS if sort_keys else None
        assert item.source_json() == orjson.dumps(doc, option=option)
        action, source, end = sent.split(b"\n")
        assert orjson.loads(action) == {"create": {"_index": item.index, "_id": item.doc_id}}
        assert source == item.source_json() and end == b""
        assert (item.sorted_source() == source) is sort_keys


def test_compacted_items_spool_and_come_back_the_same() -> None:
    items = [_item(), _item(sort_keys=True)]
    docs = [it.document for it in items]
    for it in items:
        it.compact()
    back = decode_frame(encode_frame(items))
    assert [(b.index, b.doc_id, b.content_hash, b.document) for b in back] == [
        (it.index, it.doc_id, it.content_hash, doc) for it, doc in zip(items, docs, strict=True)
    ]


def test_pre_encoded_ndjson_sends_bulk_bytes_as_they_are() -> None:
    body = b"".join(_item().encoded() for _ in range(3))
    assert PreEncodedNdjson().dumps(body) is body
    # Anything else gets the client's own NDJSON serialization.
    assert PreEncodedNdjson().dumps(b'{"a":1}') == b'{"a":1}\n'
    assert PreEncodedNdjson().dumps([{"a": 1}, {"b": 2}]) == b'{"a":1}\n{"b":2}\n'
