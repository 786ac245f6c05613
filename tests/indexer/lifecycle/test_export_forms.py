"""Events whose sorted-key JSON is not their RFC 8785 form are archived in that form.

The exporter hashes each event's sorted-key JSON and checks it against the sealed leaf;
a float such as ``100.0`` (RFC 8785 prints ``100``) or keys that sort differently by
UTF-16 code units (an astral character against a private-use one) make the two differ,
and the exporter must then archive the reference serialization, which the archive's
verifier hashes with nothing but SHA-256."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from elasticsearch import Elasticsearch

from indexer.lifecycle import export
from indexer.lifecycle.archive import EVENTS, day_key
from indexer.lifecycle.verify_archive import verify_archive
from indexer.local_s3 import LocalS3
from otel_audit.integrity import canonical_json, document_for_hashing
from receiver import native
from receiver.config import load_config
from receiver.lifecycle import cold_store_of
from tests.indexer.lifecycle.verify_helpers import keyring
from tests.support.lifecycle_harness import (
    Clock,
    Ingest,
    day_name,
    day_start_ms,
    records_on,
    run,
    runner,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.lifecycle]


@pytest.mark.parametrize("readers", ["native", "threads", "processes"])
def test_events_whose_sorted_json_differs_from_rfc8785_are_archived_in_rfc8785_form(
    lifecycle_es: Elasticsearch,
    s3: LocalS3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    readers: str,
) -> None:
    """Every way of reading a day: threads over raw HTTP with the native page reader,
    Python threads, and (a large day's) worker processes that hand each page over as an
    Arrow record batch."""
    import pyarrow.parquet as pq

    if readers == "processes":
        monkeypatch.setattr(export, "_PROCESSES_FROM", 0)
    es = lifecycle_es
    path = write_config(tmp_path, es.transport.node_pool.get().base_url, s3)
    config = load_config(path)
    day = day_start_ms(100)
    records = records_on(day, 8)
    for i, rec in enumerate(records[:4]):
        rec.attributes["invoice.amount"] = 100.0 + i
        rec.attributes["\ue000"] = "private use"
        rec.attributes["\U0001f600"] = "astral"
    with Ingest(config) as ingest:
        ingest.store(records)
        ingest.seal()
        lifecycle = runner(path, ingest.record, Clock())
        if readers == "native":
            assert lifecycle.read_page is not None, native.DESCRIPTION
        else:
            lifecycle.read_page = None
        report = run(lifecycle)
    assert report.archived_days == 1

    store = cold_store_of(config)
    table = pq.read_table(io.BytesIO(store.get_bytes(day_key(day_name(day), EVENTS)) or b""))
    sources = table.column("source").to_pylist()
    odd = 0
    for source in sources:
        doc = orjson.loads(source)
        assert source == canonical_json(document_for_hashing(doc))
        odd += source != orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    assert odd == 4, "the four events with a float and unusual keys take the fallback"
    assert table.num_rows == len(set(table.column("leaf").to_pylist())) == 8
    archive = verify_archive(store, keyring(tmp_path))
    assert archive.ok, archive.to_json_dict()
    assert [d.state for d in archive.days] == ["archived"]
