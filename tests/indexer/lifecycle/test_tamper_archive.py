"""Tampering with the archive in the real S3 server is found by ``otel-audit verify
--archive``, offline (no Elasticsearch): a byte changed, an event edited or removed, a
manifest swapped, forged or re-signed with another key, a block record edited."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from elasticsearch import Elasticsearch

from indexer.lifecycle.signed import sign_record
from indexer.lifecycle.store import ColdStore
from indexer.local_s3 import LocalS3
from otel_audit.integrity import generate_private_key
from receiver.config import load_config
from receiver.lifecycle import cold_store_of
from tests.support.lifecycle_harness import (
    BUCKET,
    Clock,
    Ingest,
    day_name,
    day_start_ms,
    free_port,
    records_on,
    run,
    runner,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.lifecycle]
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def archived(
    s3: LocalS3, tmp_path_factory: pytest.TempPathFactory, es_url: str
) -> Iterator[tuple[ColdStore, Path, str, list[str]]]:
    """Two archived days in the S3 server (built once for the module)."""
    es = Elasticsearch(es_url)
    from indexer.local_es.state import wipe_project_state
    from indexer.templates import install_templates

    wipe_project_state(es)
    install_templates(es)
    tmp = tmp_path_factory.mktemp("tamper")
    prefix = "tamper"
    path = write_config(tmp, es_url, s3, prefix=prefix)
    config = load_config(path)
    days = [day_start_ms(50), day_start_ms(49)]
    with Ingest(config) as ingest:
        ingest.store(records_on(days[0], 50) + records_on(days[1], 30))
        ingest.seal()
        run(runner(path, ingest.record, Clock()))
        ingest.seal()
    es.close()
    yield cold_store_of(config), tmp, f"s3://{BUCKET}/{prefix}", [day_name(d) for d in days]


def _verify(s3: LocalS3, tmp: Path, url: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    opts = s3.client_options()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        # Nothing listens here: the archive is verified without Elasticsearch.
        "OTEL_AUDIT_ES_URL": f"http://127.0.0.1:{free_port()}",
        "OTEL_AUDIT_COLD_STORE_ENDPOINT_URL": opts["endpoint_url"],
        "OTEL_AUDIT_COLD_STORE_ACCESS_KEY_ID": opts["aws_access_key_id"],
        "OTEL_AUDIT_COLD_STORE_SECRET_ACCESS_KEY": opts["aws_secret_access_key"],
    }
    proc = subprocess.run(
        [sys.executable, "-m", "otel_audit.cli", "verify", "--archive", url, "--json",
         "--public-key", str(tmp / "integrity-state" / "keys")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return proc.returncode, json.loads(proc.stdout)


def _kinds(report: dict) -> set[tuple[str, str]]:  # type: ignore[type-arg]
    return {(f["kind"], d["day"]) for d in report["days"] for f in d["findings"]}


def _rewrite_events(store: ColdStore, key: str, change: Callable[[dict], dict]) -> None:  # type: ignore[type-arg]
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(store.get_bytes(key) or b""))
    columns = change(table.to_pydict())
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pydict(columns, table.schema), out, compression="zstd")
    store.put_bytes(key, out.getvalue())


@pytest.fixture
def pristine(
    archived: tuple[ColdStore, Path, str, list[str]],
) -> Iterator[tuple[ColdStore, Path, str, list[str]]]:
    """The archive, put back as it was after each test."""
    store = archived[0]
    keys = [*store.list("days"), *store.list("catalog")]
    saved = {k: store.get_bytes(k) for k in keys}
    yield archived
    for key in [*store.list("days"), *store.list("catalog")]:
        if key not in saved:
            store.delete(key)
    for key, data in saved.items():
        assert data is not None
        store.put_bytes(key, data)


def test_untouched_archive_verifies_clean_offline(
    pristine: tuple[ColdStore, Path, str, list[str]], s3: LocalS3
) -> None:
    _store, tmp, url, _days = pristine
    code, report = _verify(s3, tmp, url)
    assert code == 0, report
    assert report["summary"]["events"] == 80
    assert [d["state"] for d in report["days"]] == ["archived", "archived"]


def test_one_byte_changed_in_the_events_object(
    pristine: tuple[ColdStore, Path, str, list[str]], s3: LocalS3
) -> None:
    store, tmp, url, days = pristine
    key = f"days/{days[0]}/events.parquet"
    data = bytearray(store.get_bytes(key) or b"")
    data[len(data) // 2] ^= 0x01
    store.put_bytes(key, bytes(data))
    code, report = _verify(s3, tmp, url)
    assert code == 1
    assert ("modified", days[0]) in _kinds(report)
    assert {d for _k, d in _kinds(report)} == {days[0]}


def test_one_byte_changed_in_one_event(
    pristine: tuple[ColdStore, Path, str, list[str]], s3: LocalS3
) -> None:
    store, tmp, url, days = pristine

    def edit(cols: dict) -> dict:  # type: ignore[type-arg]
        src = bytearray(cols["source"][3])
        src[src.index(b"inv-") + 4] ^= 0x01
        cols["source"][3] = bytes(src)
        return cols

    _rewrite_events(store, f"days/{days[0]}/events.parquet", edit)
    code, report = _verify(s3, tmp, url)
    assert code == 1
    edited = [f for d in report["days"] for f in d["findings"] if f["kind"] == "modified"]
    assert any("event_id" in f for f in edited), edited


def test_one_event_removed(pristine: tuple[ColdStore, Path, str, list[str]], s3: LocalS3) -> None:
    store, tmp, url, days = pristine
    _rewrite_events(
        store, f"days/{days[1]}/events.parquet", lambda c: {k: v[1:] for k, v in c.items()}
    )
    code, report = _verify(s3, tmp, url)
    assert code == 1
    missing = [f for d in report["days"] for f in d["findings"] if f["kind"] == "missing"]
    assert any("is not in the archive" in f["message"] for f in missing), report


def test_manifest_swapped_for_another_days(
    pristine: tuple[ColdStore, Path, str, list[str]], s3: LocalS3
) -> None:
    store, tmp, url, days = pristine
    store.put_bytes(
        f"days/{days[1]}/manifest.json", store.get_bytes(f"days/{days[0]}/manifest.json") or b""
    )
    code, report = _verify(s3, tmp, url)
    assert code == 1
    assert ("misplaced", days[1]) in _kinds(report)


def test_manifest_edited_or_signed_by_another_key(
    pristine: tuple[ColdStore, Path, str, list[str]], s3: LocalS3
) -> None:
    store, tmp, url, days = pristine
    key = f"days/{days[0]}/manifest.json"
    manifest = orjson.loads(store.get_bytes(key) or b"")
    store.put_bytes(key, orjson.dumps({**manifest, "events": manifest["events"] - 1}))
    code, report = _verify(s3, tmp, url)
    assert code == 1 and ("bad_signature", days[0]) in _kinds(report)

    # An attacker's own key: a well-formed manifest, but not one the keyring trusts.
    forged = sign_record({**manifest, "events": manifest["events"] - 1}, generate_private_key())
    store.put_bytes(key, orjson.dumps(forged))
    code, report = _verify(s3, tmp, url)
    assert code == 1 and ("unknown_key", days[0]) in _kinds(report)


def test_block_record_edited(pristine: tuple[ColdStore, Path, str, list[str]], s3: LocalS3) -> None:
    store, tmp, url, days = pristine
    key = f"days/{days[0]}/blocks.ndjson"
    lines = (store.get_bytes(key) or b"").splitlines()
    block = orjson.loads(lines[0])
    block["checkpoint"]["tree_size"] += 1  # claims one more event than was signed
    store.put_bytes(key, b"\n".join([orjson.dumps(block), *lines[1:]]) + b"\n")
    code, report = _verify(s3, tmp, url)
    assert code == 1
    assert ("bad_signature", days[0]) in _kinds(report)

    # A block moved so the events sit at other leaves: they no longer fit its root.
    block = orjson.loads(lines[0])
    block["first_leaf"] += 1
    block["checkpoint"] = orjson.loads(lines[0])["checkpoint"]
    store.put_bytes(key, b"\n".join([orjson.dumps(block), *lines[1:]]) + b"\n")
    code, report = _verify(s3, tmp, url)
    assert code == 1 and report["days"][0]["findings"]

    # A block record dropped from the archive.
    store.put_bytes(key, b"\n".join(lines[1:]) + b"\n")
    code, report = _verify(s3, tmp, url)
    assert code == 1 and ("missing", days[0]) in _kinds(report)


def test_a_whole_day_removed_or_a_catalog_entry_removed(
    pristine: tuple[ColdStore, Path, str, list[str]], s3: LocalS3
) -> None:
    store, tmp, url, days = pristine
    for key in store.list(f"days/{days[0]}"):
        store.delete(key)
    code, report = _verify(s3, tmp, url)
    assert code == 1
    assert ("missing", days[0]) in _kinds(report)

    # Also removing its catalog entry breaks the signed chain.
    first = store.list("catalog")[0]
    store.delete(first)
    code, report = _verify(s3, tmp, url)
    assert code == 1
    assert any(f["kind"] == "missing" for f in report["catalog"]), report
