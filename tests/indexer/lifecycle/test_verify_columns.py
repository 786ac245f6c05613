"""The read-back check's whole-column path agrees with the per-event reference.

An archived day (written by the lifecycle into the real S3 server, its blocks shared with
the next day, so some positions are the next day's ``others``) is copied into a directory
store and changed in ways the file hashes do not catch: each change is re-signed with the
receiver's own key, as a bug in the exporter would write it. The whole-column path must
run on the clean day, step aside on every changed one, and the report must be the
reference's, finding for finding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from elasticsearch import Elasticsearch

from indexer.lifecycle.archive import HOT_DELETED, DayReport, day_key, verify_day
from indexer.lifecycle.runner import LifecycleRunner
from indexer.lifecycle.signed import sign_record
from indexer.lifecycle.store import ColdStore, DirectoryStore
from indexer.local_s3 import LocalS3
from otel_audit.integrity import leaf_hash
from receiver.config import load_config
from receiver.lifecycle import cold_store_of
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

Tamper = Callable[[pa.Table], pa.Table]


@pytest.fixture(scope="module")
def archived(
    s3: LocalS3, tmp_path_factory: pytest.TempPathFactory, es_url: str
) -> Iterator[tuple[ColdStore, LifecycleRunner, str]]:
    """One archived day whose blocks also hold events of the following day."""
    es = Elasticsearch(es_url)
    from indexer.local_es.state import wipe_project_state
    from indexer.templates import install_templates

    wipe_project_state(es)
    install_templates(es)
    tmp = tmp_path_factory.mktemp("columns")
    path = write_config(tmp, es_url, s3, prefix="columns")
    config = load_config(path)
    days = [day_start_ms(50), day_start_ms(49)]
    with Ingest(config) as ingest:
        # Stored together, sealed together: the blocks straddle the two days.
        ingest.store(records_on(days[0], 40) + records_on(days[1], 25))
        ingest.seal()
        lifecycle = runner(path, ingest.record, Clock())
        run(lifecycle)
    es.close()
    assert lifecycle.fast_leaves is not None and lifecycle.fast_extend is not None, (
        "the native extension is part of the build (make install)"
    )
    yield cold_store_of(config), lifecycle, day_name(days[0])


def _copy(source: ColdStore, day: str, root: Path) -> DirectoryStore:
    """The day's files and manifest as the lifecycle verifies them: before it records the
    hot index's deletion (a record that names the manifest this test re-signs)."""
    store = DirectoryStore(root)
    for key in source.list(f"days/{day}"):
        if key.endswith("/" + HOT_DELETED):
            continue
        data = source.get_bytes(key)
        assert data is not None
        store.put_bytes(key, data)
    return store


def _resign(store: DirectoryStore, day: str, lifecycle: LifecycleRunner, events: int) -> None:
    """The manifest again, over the files as they are now, signed with the receiver's key."""
    manifest = orjson.loads(store.get_bytes(day_key(day, "manifest.json")) or b"")
    for name, meta in manifest["files"].items():
        data = store.get_bytes(day_key(day, name)) or b""
        meta.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    manifest["events"] = events
    store.put_bytes(
        day_key(day, "manifest.json"), orjson.dumps(sign_record(manifest, lifecycle.key))
    )


def _rewrite_events(store: DirectoryStore, day: str, tmp: Path, change: Tamper) -> int:
    path = tmp / "events.parquet"
    assert store.download(day_key(day, "events.parquet"), path)
    table = change(pq.read_table(path))
    pq.write_table(table, path, compression="zstd")
    store.put_file(day_key(day, "events.parquet"), path)
    return int(table.num_rows)


def _both(
    store: DirectoryStore, day: str, lifecycle: LifecycleRunner
) -> tuple[DayReport, DayReport]:
    columns = verify_day(
        store,
        day,
        lifecycle.keyring,
        fast_extend=lifecycle.fast_extend,
        fast_leaves=lifecycle.fast_leaves,
    )
    reference = verify_day(store, day, lifecycle.keyring)
    assert not reference.whole_columns
    assert columns.to_json_dict() == reference.to_json_dict()
    return columns, reference


def _set(table: pa.Table, name: str, row: int, value: Any) -> pa.Table:
    values = table.column(name).to_pylist()
    values[row] = value
    at = table.schema.get_field_index(name)
    return table.set_column(
        at, table.schema.field(at), pa.array(values, table.schema.field(at).type)
    )


def _edit(table: pa.Table) -> pa.Table:
    """One event's stored bytes changed; its stored leaf prefix left as it was."""
    source = table.column("source")[3].as_py()
    return _set(table, "source", 3, source.replace(b'"', b"'", 1))


def _edit_with_prefix(table: pa.Table) -> pa.Table:
    """One event changed and its leaf prefix made to match: only the block root tells."""
    source = table.column("source")[3].as_py().replace(b'"', b"'", 1)
    table = _set(table, "source", 3, source)
    return _set(table, "leaf_prefix", 3, leaf_hash(source)[:8])


def _remove(table: pa.Table) -> pa.Table:
    return pa.concat_tables([table.slice(0, 5), table.slice(6)])


def _duplicate(table: pa.Table) -> pa.Table:
    return pa.concat_tables([table, table.slice(2, 1)])


def _move(table: pa.Table) -> pa.Table:
    """One event placed at a leaf of the chain no archived block covers."""
    return _set(table, "leaf", 7, table.column("leaf")[7].as_py() + 1_000_000)


def _swap(table: pa.Table) -> pa.Table:
    """Two events' places exchanged (every other column kept)."""
    leaves = table.column("leaf").to_pylist()
    leaves[0], leaves[1] = leaves[1], leaves[0]
    return _set(_set(table, "leaf", 0, leaves[0]), "leaf", 1, leaves[1])


def test_clean_day_runs_whole_columns_and_agrees(
    archived: tuple[ColdStore, LifecycleRunner, str], tmp_path: Path
) -> None:
    source, lifecycle, day = archived
    blocks = (source.get_bytes(day_key(day, "blocks.ndjson")) or b"").splitlines()
    assert any(orjson.loads(b)["others"]["positions"] for b in blocks), "no shared block"
    store = _copy(source, day, tmp_path / "store")
    columns, _ = _both(store, day, lifecycle)
    assert columns.ok and columns.events == 40
    assert columns.whole_columns


@pytest.mark.parametrize(
    ("change", "kinds"),
    [
        (_edit, {"modified"}),
        (_edit_with_prefix, {"bad_signature"}),
        (_remove, {"missing"}),
        (_duplicate, {"inserted", "missing"}),
        (_move, {"inserted", "missing"}),
        (_swap, {"bad_signature"}),
    ],
    ids=["edit", "edit-with-prefix", "remove", "duplicate", "move", "swap"],
)
def test_changed_events_fall_back_to_the_reference(
    archived: tuple[ColdStore, LifecycleRunner, str],
    tmp_path: Path,
    change: Tamper,
    kinds: set[str],
) -> None:
    source, lifecycle, day = archived
    store = _copy(source, day, tmp_path / "store")
    events = _rewrite_events(store, day, tmp_path, change)
    _resign(store, day, lifecycle, events)
    columns, _ = _both(store, day, lifecycle)
    assert not columns.whole_columns
    assert not any(f.message.startswith("the hot_deleted") for f in columns.findings)
    assert {f.kind for f in columns.findings} == kinds, columns.findings


def test_changed_block_falls_back_to_the_reference(
    archived: tuple[ColdStore, LifecycleRunner, str], tmp_path: Path
) -> None:
    source, lifecycle, day = archived
    store = _copy(source, day, tmp_path / "store")
    key = day_key(day, "blocks.ndjson")
    lines = (store.get_bytes(key) or b"").splitlines()
    shared = next(i for i, b in enumerate(lines) if orjson.loads(b)["others"]["positions"])
    block = orjson.loads(lines[shared])
    block["others"]["leaf_hashes"][0] = block["others"]["leaf_hashes"][0][::-1]
    lines[shared] = orjson.dumps(block)
    store.put_bytes(key, b"\n".join(lines) + b"\n")
    _resign(store, day, lifecycle, 40)
    columns, _ = _both(store, day, lifecycle)
    assert not columns.whole_columns and not columns.ok
