"""The archive of one day: what is in it, how it is written, how it is verified.

A day ``D`` (the events of ``audit-events-D``) is archived under ``days/D/``::

    events.parquet        the events, one row each: chain id, leaf index, event id,
                          @timestamp, the filter columns (ARCHIVE_FIELDS) and ``source``,
                          the RFC 8785 bytes of the stored document (what its leaf hashes)
    blocks.ndjson         every block record (audit-blocks documents) holding one of them
    checkpoints.ndjson    the external checkpoints of those blocks
    rejected.ndjson.gz    the day's dead letters (unsealed; covered by the file hash only)
    manifest.json         written last, signed: counts, per-block roots, leaf ranges,
                          and the SHA-256 and size of every file above

Later, also signed (see :mod:`indexer.lifecycle.runner`): ``hot-deleted.json`` when the
policy deleted the hot index, ``purged.json`` when it deleted the files past retention;
and the day's entry in the catalog (:mod:`indexer.lifecycle.catalog`).

:func:`verify_day` needs nothing but the store and the public keys: the manifest's
signature, every file's hash, every block's signature and that its leaves recompute to
its signed root, every checkpoint equal to its block's, and every event's leaf
``SHA-256(0x00 || source)`` equal to the sealed leaf at its position, with every position
the blocks assign to this day's index present exactly once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from indexer.indices import EVENTS_INDEX_PREFIX
from indexer.integrity.blocks import BlockRecord
from indexer.lifecycle.signed import SignedRecordError, parse_record, verify_record
from indexer.lifecycle.store import ColdStore
from otel_audit.integrity import (
    HASH_SIZE,
    Checkpoint,
    CheckpointFormatError,
    CheckpointStatus,
    CompactRange,
    Keyring,
    ProofError,
    decode_hash,
    encode_hash,
    leaf_hash,
    verify_checkpoint,
)
from otel_audit.integrity.merkle import FastExtend

FastLeaves = Callable[[bytes, bytes, int], bytes]
"""The native extension's ``leaf_hashes``: the leaf hash of every value of an Arrow binary
column (its offsets and data buffers, the number of values), concatenated."""

__all__ = [
    "ARCHIVE_FIELDS",
    "ARCHIVE_FORMAT",
    "ArchiveFinding",
    "DayFiles",
    "DayReport",
    "FastLeaves",
    "compact_block",
    "day_key",
    "day_of_index",
    "index_of_day",
    "leaf_ranges",
    "list_days",
    "manifest_body",
    "read_parquet",
    "seal_problems",
    "sha256_file",
    "verify_day",
]

ARCHIVE_FORMAT = "otel-audit.archive.v1"
MANIFEST = "manifest.json"
EVENTS = "events.parquet"
BLOCKS = "blocks.ndjson"
CHECKPOINTS = "checkpoints.ndjson"
REJECTED = "rejected.ndjson.gz"
HOT_DELETED = "hot-deleted.json"
PURGED = "purged.json"
DATA_FILES = (EVENTS, BLOCKS, CHECKPOINTS, REJECTED)

ARCHIVE_FIELDS: tuple[str, ...] = (
    "event.action",
    "audit.category",
    "audit.outcome",
    "audit.actor.type",
    "user.id",
    "audit.resource.type",
    "audit.resource.id",
    "service.name",
    "organization.id",
    "trace.id",
    "span.id",
    "audit.correlation_id",
)
"""Stored fields kept as their own columns, so an archived day is filtered without
parsing every document (the query API's filters; anything else is read from ``source``)."""

_PREFIX_BYTES = 8
"""Bytes of each event's leaf hash the exporter stores in ``leaf_prefix``."""


def day_key(day: str, name: str) -> str:
    """The store key of one file of a day."""
    return f"days/{day}/{name}"


def day_of_index(index: str) -> str:
    """``YYYY.MM.DD`` of a daily events index."""
    return index.removeprefix(EVENTS_INDEX_PREFIX)


def index_of_day(day: str) -> str:
    """The daily events index of ``day``."""
    return EVENTS_INDEX_PREFIX + day


def list_days(store: ColdStore) -> list[str]:
    """Days that have a manifest in the store, oldest first."""
    return sorted(
        key.split("/")[1]
        for key in store.list("days")
        if key.count("/") == 2 and key.endswith("/" + MANIFEST)
    )


def field_value(doc: Mapping[str, Any], path: str) -> str | None:
    """The string at a dotted path of a document (None when absent or not a scalar)."""
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    if value is None or isinstance(value, (dict, list)):
        return None
    return value if isinstance(value, str) else str(value)


def leaf_ranges(pairs: Iterable[tuple[str, int]]) -> dict[str, list[list[int]]]:
    """``{chain: [[start, end), ...]}`` of (chain, leaf index) pairs."""
    by_chain: dict[str, list[int]] = {}
    for chain, leaf in pairs:
        by_chain.setdefault(chain, []).append(leaf)
    out: dict[str, list[list[int]]] = {}
    for chain, leaves in sorted(by_chain.items()):
        leaves.sort()
        ranges: list[list[int]] = []
        for leaf in leaves:
            if ranges and ranges[-1][1] == leaf:
                ranges[-1][1] = leaf + 1
            else:
                ranges.append([leaf, leaf + 1])
        out[chain] = ranges
    return out


@dataclass(slots=True)
class DayFiles:
    """The data files of one day, written to a local directory, and what the manifest says."""

    directory: Path
    events: int
    time_range: tuple[str, str] | None
    files: dict[str, dict[str, Any]]
    blocks: list[dict[str, Any]]
    leaves: dict[str, list[list[int]]]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_body(day: str, index: str, files: DayFiles, created_ms: int) -> dict[str, Any]:
    """The unsigned manifest of a day."""
    return {
        "kind": "archive_manifest",
        "format": ARCHIVE_FORMAT,
        "day": day,
        "index": index,
        "created_ms": created_ms,
        "events": files.events,
        "time_range": list(files.time_range) if files.time_range else [],
        "files": files.files,
        "blocks": files.blocks,
        "leaves": files.leaves,
    }


def read_parquet(path: Path, columns: list[str] | None = None) -> Any:
    """The archived events table (``pyarrow.Table``) of a downloaded events file."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=columns)


@dataclass(frozen=True, slots=True)
class ArchiveFinding:
    """One thing in the archive that is not as signed."""

    kind: str
    """``bad_signature``, ``unknown_key``, ``modified``, ``missing``, ``inserted``,
    ``misplaced`` (a manifest of another day) or ``malformed``."""
    day: str
    message: str
    event_id: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict without empty fields."""
        out = {"kind": self.kind, "day": self.day, "message": self.message}
        if self.event_id is not None:
            out["event_id"] = self.event_id
        return out


@dataclass(slots=True)
class DayReport:
    """What :func:`verify_day` found for one day."""

    day: str
    state: str = "missing"
    """``archived`` (files present and verified), ``purged`` (deleted past retention by a
    signed record) or ``missing``."""
    events: int = 0
    blocks: int = 0
    manifest: dict[str, Any] | None = None
    manifest_sha256: str = ""
    hot_deleted: dict[str, Any] | None = None
    purged: dict[str, Any] | None = None
    findings: list[ArchiveFinding] = field(default_factory=list)
    whole_columns: bool = False
    """True when the events and blocks were verified by :func:`_verify_columns` (the
    ordinary case, whole columns at once); False when the per-event reference ran (no
    native hashing, or something disagreed: it names every finding)."""

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.findings

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "day": self.day,
            "state": self.state,
            "events": self.events,
            "blocks": self.blocks,
            "hot_deleted": self.hot_deleted is not None,
            "findings": [f.to_json_dict() for f in self.findings],
        }


def _signed(
    store: ColdStore, day: str, name: str, kind: str, keyring: Keyring, report: DayReport
) -> dict[str, Any] | None:
    """A signed record of the day, or None (absent; or invalid, then a finding)."""
    data = store.get_bytes(day_key(day, name))
    if data is None:
        return None
    try:
        record = parse_record(data, f"{day}/{name}")
        verify_record(record, keyring, kind)
    except SignedRecordError as exc:
        kind_found = exc.kind if exc.kind in ("bad_signature", "unknown_key") else "malformed"
        report.findings.append(ArchiveFinding(kind_found, day, f"{name}: {exc}"))
        return None
    if record.get("day") != day:
        report.findings.append(
            ArchiveFinding(
                "misplaced", day, f"{name} is signed for day {record.get('day')!r}, not {day}"
            )
        )
        return None
    return record


def verify_day(
    store: ColdStore,
    day: str,
    keyring: Keyring,
    *,
    workdir: str | Path | None = None,
    expected_manifest_sha256: str | None = None,
    fast_extend: FastExtend | None = None,
    fast_leaves: FastLeaves | None = None,
) -> DayReport:
    """Verify one archived day from the store alone (see the module docstring).

    ``fast_extend`` is an accelerated Merkle extension (the native one, handed down by
    whoever may load it) for recomputing the blocks' roots, ``fast_leaves`` the native
    leaf hashing of a column of events (:data:`FastLeaves`); the results are the same."""
    report = DayReport(day)
    raw = store.get_bytes(day_key(day, MANIFEST))
    report.purged = _signed(store, day, PURGED, "purged", keyring, report)
    report.hot_deleted = _signed(store, day, HOT_DELETED, "hot_deleted", keyring, report)
    if raw is None:
        report.findings.append(ArchiveFinding("missing", day, "manifest.json is missing"))
        return report
    report.manifest_sha256 = hashlib.sha256(raw).hexdigest()
    if expected_manifest_sha256 and expected_manifest_sha256 != report.manifest_sha256:
        report.findings.append(
            ArchiveFinding("modified", day, "manifest.json is not the manifest the policy recorded")
        )
    try:
        manifest = parse_record(raw, f"{day}/manifest.json")
        verify_record(manifest, keyring, "archive_manifest")
    except SignedRecordError as exc:
        kind = exc.kind if exc.kind in ("bad_signature", "unknown_key") else "malformed"
        report.findings.append(ArchiveFinding(kind, day, f"manifest.json: {exc}"))
        return report
    if manifest.get("day") != day or manifest.get("format") != ARCHIVE_FORMAT:
        report.findings.append(
            ArchiveFinding(
                "misplaced",
                day,
                f"manifest.json is signed for day {manifest.get('day')!r}, not {day}",
            )
        )
        return report
    report.manifest = manifest
    report.events = int(manifest.get("events", 0))
    report.blocks = len(manifest.get("blocks", []))
    for record in (report.purged, report.hot_deleted):
        if record is not None and record.get("manifest_sha256") != report.manifest_sha256:
            report.findings.append(
                ArchiveFinding(
                    "modified", day, f"the {record['kind']} record names another manifest"
                )
            )
    if report.purged is not None:
        report.state = "purged"
        return report
    with tempfile.TemporaryDirectory(prefix="otel-audit-verify-", dir=workdir) as tmp:
        _verify_files(store, day, manifest, keyring, Path(tmp), report, fast_extend, fast_leaves)
    if report.ok:
        report.state = "archived"
    return report


def _verify_files(
    store: ColdStore,
    day: str,
    manifest: Mapping[str, Any],
    keyring: Keyring,
    tmp: Path,
    report: DayReport,
    fast_extend: FastExtend | None = None,
    fast_leaves: FastLeaves | None = None,
) -> None:
    files: Mapping[str, Any] = manifest.get("files", {})
    present: dict[str, Path] = {}
    for name, meta in sorted(files.items()):
        if name not in DATA_FILES:
            report.findings.append(ArchiveFinding("malformed", day, f"unknown file {name!r}"))
            continue
        path = tmp / name
        if not store.download(day_key(day, name), path):
            report.findings.append(ArchiveFinding("missing", day, f"{name} is missing"))
            continue
        if path.stat().st_size != meta.get("bytes") or sha256_file(path) != meta.get("sha256"):
            report.findings.append(
                ArchiveFinding("modified", day, f"{name} differs from its signed SHA-256")
            )
            # Still read it: the per-event checks say which events were changed.
        present[name] = path
    if EVENTS not in files or BLOCKS not in files:
        report.findings.append(ArchiveFinding("malformed", day, "the manifest lists no events"))
        return
    index = str(manifest.get("index"))
    if (
        not report.findings
        and fast_leaves is not None
        and fast_extend is not None
        and EVENTS in present
        and BLOCKS in present
    ):
        trusted = _verify_columns(
            present[EVENTS], present[BLOCKS], index, manifest, keyring, fast_leaves, fast_extend
        )
        if trusted is not None:
            report.whole_columns = True
            if CHECKPOINTS in present:
                _verify_checkpoints(present[CHECKPOINTS], day, trusted, report)
            return
    rows = _read_rows(present.get(EVENTS), day, report, fast_leaves)
    blocks = _verify_blocks(
        present.get(BLOCKS), day, index, rows, manifest, keyring, report, fast_extend
    )
    if CHECKPOINTS in present:
        _verify_checkpoints(present[CHECKPOINTS], day, blocks, report)
    for chain, leaf in sorted(k for k, row in rows.items() if not row.placed):
        report.findings.append(
            ArchiveFinding(
                "inserted",
                day,
                f"event at leaf {chain}:{leaf} is in no archived block",
                event_id=rows[(chain, leaf)].event_id,
            )
        )
    if len(rows) != manifest.get("events"):
        report.findings.append(
            ArchiveFinding(
                "missing" if len(rows) < int(manifest.get("events", 0)) else "inserted",
                day,
                f"events.parquet holds {len(rows)} events, the manifest signs "
                f"{manifest.get('events')}",
            )
        )


def _file_leaves(path: Path, fast_leaves: FastLeaves) -> bytes | None:
    """The leaf hash of every archived ``source`` of an events file, concatenated in row
    order; None when a value is missing or not binary. Each row group is read and hashed
    in place from its Arrow buffers by one of two threads (decoding and the native hashing
    run without the GIL), so only two row groups of sources are in memory at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def hash_group(group: int) -> bytes | None:
        column = (
            pq.ParquetFile(path)
            .read_row_group(group, columns=["source"], use_threads=False)
            .column(0)
            .combine_chunks()
        )
        if column.type != pa.binary() or column.null_count:
            return None
        if not len(column):
            return b""
        _, offsets, data = column.buffers()
        ends = memoryview(offsets)[column.offset * 4 : (column.offset + len(column) + 1) * 4]
        return fast_leaves(ends, data, len(column))  # type: ignore[arg-type]

    with ThreadPoolExecutor(2, thread_name_prefix="archive-leaves") as pool:
        parts = list(pool.map(hash_group, range(pq.ParquetFile(path).num_row_groups)))
    if any(part is None for part in parts):
        return None
    return b"".join(parts)  # type: ignore[arg-type]


def _verify_columns(
    events: Path,
    blocks_path: Path,
    index: str,
    manifest: Mapping[str, Any],
    keyring: Keyring,
    fast_leaves: FastLeaves,
    fast_extend: FastExtend,
) -> dict[tuple[str, int], BlockRecord] | None:
    """The ordinary case of the events and blocks checks of :func:`verify_day`, over
    whole columns: the trusted blocks (their signed part) when every check passes, None
    as soon as anything disagrees or is unusual; the per-event reference then runs and
    says what (the findings come from it alone).

    What passing means, as in the reference: every block's checkpoint verifies and is the
    one the manifest signs, and each manifest block is there once; the archived rows'
    (chain, leaf) are, sorted, exactly the positions the blocks give this day (each block's
    range less its ``others``, which name other indices), so every row is placed once and
    no sealed event is missing; each row's stored prefix is the start of its recomputed
    leaf; each block's leaves (the rows' leaves at their positions, ``others`` between
    them) extend its signed frontier to its signed root; and the count is the manifest's.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        table = read_parquet(events, ["chain", "leaf", "leaf_prefix"])
        flat = _file_leaves(events, fast_leaves)
    except Exception:  # pyarrow raises several kinds; the reference reports the damage
        return None
    rows = table.num_rows
    if rows != manifest.get("events") or any(table.column(i).null_count for i in range(3)):
        return None
    chain_col, leaf_col, prefix_col = (table.column(i).combine_chunks() for i in range(3))
    if (
        chain_col.type != pa.string()
        or leaf_col.type != pa.int64()
        or prefix_col.type != pa.binary()
    ):
        return None
    if flat is None or len(flat) != rows * HASH_SIZE:
        return None
    leaves = pa.Array.from_buffers(pa.binary(HASH_SIZE), rows, [None, pa.py_buffer(flat)])
    if rows and not (
        pc.all(pc.equal(pc.binary_length(prefix_col), _PREFIX_BYTES)).as_py()
        and pc.all(
            pc.equal(
                prefix_col.cast(pa.binary(_PREFIX_BYTES)), pc.binary_slice(leaves, 0, _PREFIX_BYTES)
            )
        ).as_py()
    ):
        return None
    order = pc.sort_indices(
        pa.table({"chain": chain_col, "leaf": leaf_col}),
        sort_keys=[("chain", "ascending"), ("leaf", "ascending")],
    )
    sorted_leaf = leaf_col.take(order)
    sorted_hashes = leaves.take(order).buffers()[1].to_pybytes()
    runs = pc.run_end_encode(chain_col.take(order)) if rows else None
    segments: dict[str, tuple[int, int]] = {}
    if runs is not None:
        start = 0
        for chain, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
            segments[chain] = (start, end)
            start = end

    # The blocks: signed, the manifest's, and what each gives this day.
    signed = {(b["chain_id"], b["sequence"]): b for b in manifest.get("blocks", [])}
    by_chain: dict[str, list[tuple[BlockRecord, dict[int, bytes]]]] = {}
    trusted: dict[tuple[str, int], BlockRecord] = {}
    try:
        for line in blocks_path.read_bytes().splitlines():
            doc = orjson.loads(line)
            others = doc.pop("others", {}) or {}
            listed: dict[int, bytes] = {}
            for n, (pos, idx, lh) in enumerate(
                zip(
                    others.get("positions", []),
                    others.get("event_indices", []),
                    others.get("leaf_hashes", []),
                    strict=True,
                )
            ):
                if type(pos) is not int or pos in listed or str(idx) == index:
                    return None
                listed[pos] = decode_hash(lh, f"others.leaf_hashes[{n}]")
            if len(others.get("event_ids", [])) != len(listed):
                return None
            count = doc.get("leaf_count")
            doc.update({"event_ids": [], "event_indices": [], "leaf_hashes": []})
            shell = BlockRecord.from_document(doc)
            if (
                type(count) is not int
                or shell.first_leaf + count != shell.checkpoint.tree_size
                or any(not 0 <= p < count for p in listed)
            ):
                return None
            if verify_checkpoint(shell.checkpoint, keyring) is not CheckpointStatus.OK:
                return None
            want = signed.pop((shell.chain_id, shell.sequence), None)
            if want is None or want["root_hash"] != encode_hash(shell.checkpoint.root_hash):
                return None
            by_chain.setdefault(shell.chain_id, []).append((shell, listed))
            trusted[(shell.chain_id, shell.sequence)] = shell
    except (orjson.JSONDecodeError, CheckpointFormatError, ValueError, TypeError, KeyError):
        return None
    if signed or not set(segments) <= set(by_chain):
        return None

    # Each chain's sorted rows against its blocks' positions, and every block's root.
    for chain, blocks in by_chain.items():
        start, end = segments.get(chain, (0, 0))
        segment = sorted_leaf.slice(start, end - start)
        if len(segment) > 1 and not pc.all(pc.less(segment[:-1], segment[1:])).as_py():
            return None  # a position archived twice
        at = start
        previous_end = -1
        for shell, listed in sorted(blocks, key=lambda b: b[0].first_leaf):
            first = shell.first_leaf
            count = shell.checkpoint.tree_size - first
            if first < previous_end:
                return None
            previous_end = first + count
            pieces: list[bytes] = []
            pos = 0
            for stop in [*sorted(listed), count]:
                if stop > pos:  # positions pos..stop-1 are this day's rows
                    taken = stop - pos
                    if (
                        at + taken > end
                        or sorted_leaf[at].as_py() != first + pos
                        or sorted_leaf[at + taken - 1].as_py() != first + stop - 1
                    ):
                        return None
                    pieces.append(sorted_hashes[at * HASH_SIZE : (at + taken) * HASH_SIZE])
                    at += taken
                if stop < count:
                    pieces.append(listed[stop])
                pos = stop + 1
            joined = b"".join(pieces)
            block_leaves = [joined[i : i + HASH_SIZE] for i in range(0, len(joined), HASH_SIZE)]
            try:
                cr = CompactRange.from_state(first, shell.frontier, fast_extend=fast_extend)
                cr.extend(block_leaves)
            except (ProofError, ValueError):
                return None
            if cr.root() != shell.checkpoint.root_hash:
                return None
        if at != end:
            return None  # rows of this chain that no block places
    return trusted


@dataclass(slots=True)
class _Row:
    event_id: str
    leaf: bytes
    """SHA-256(0x00 || source): the leaf this event has now."""
    stored_prefix: bytes
    """The first bytes of the leaf as archived (names the changed event on a mismatch)."""
    placed: bool = False


def _leaves_of(column: Any, fast_leaves: FastLeaves | None) -> list[bytes]:
    """The leaf hash of each archived ``source`` (``b""`` for a missing one)."""
    import pyarrow as pa

    if fast_leaves is not None and column.null_count == 0 and column.type == pa.binary():
        _, offsets, data = column.buffers()
        start = column.offset * 4
        ends = offsets.to_pybytes()[start : start + (len(column) + 1) * 4]
        flat = fast_leaves(ends, data.to_pybytes(), len(column))
        return [flat[i : i + HASH_SIZE] for i in range(0, len(flat), HASH_SIZE)]
    return [leaf_hash(s) if type(s) is bytes else b"" for s in column.to_pylist()]


def _read_rows(
    path: Path | None, day: str, report: DayReport, fast_leaves: FastLeaves | None = None
) -> dict[tuple[str, int], _Row]:
    rows: dict[tuple[str, int], _Row] = {}
    if path is None:
        return rows
    try:
        table = read_parquet(path, ["chain", "leaf", "event_id", "leaf_prefix", "source"])
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        report.findings.append(ArchiveFinding("malformed", day, f"events.parquet: {exc}"))
        return rows
    for batch in table.to_batches(max_chunksize=65_536):
        chains, leaves, ids, prefixes = (batch.column(i).to_pylist() for i in range(4))
        hashes = _leaves_of(batch.column(4), fast_leaves)
        for chain, leaf, eid, prefix, lh in zip(chains, leaves, ids, prefixes, hashes, strict=True):
            if (chain, leaf) in rows:
                report.findings.append(
                    ArchiveFinding(
                        "inserted", day, f"leaf {chain}:{leaf} is archived twice", event_id=eid
                    )
                )
                continue
            rows[(chain, leaf)] = _Row(eid, lh, prefix or b"")
    return rows


def compact_block(record: BlockRecord, others: Iterable[int]) -> dict[str, Any]:
    """A block record without what the archive's own events give back.

    The leaf hash, id and index of every position whose event is in this archive are
    left out (the verifier recomputes them from the events); the ``others`` positions
    (events of other days in the same block) are kept under ``others``. The signed
    checkpoint, frontier and time range stay, so the block still recomputes to its
    signed root.
    """
    shell = dataclasses.replace(record, event_ids=(), event_indices=(), leaf_hashes=())
    doc = shell.to_document()  # without encoding every leaf only to drop it
    doc["leaf_count"] = len(record.leaf_hashes)
    for name in ("event_ids", "event_indices", "leaf_hashes", "id_keys"):
        doc.pop(name, None)  # id_keys: Elasticsearch's lookup keys, of no use here
    positions = sorted(others)
    doc["others"] = {
        "positions": positions,
        "event_ids": [record.event_ids[p] for p in positions],
        "event_indices": [record.event_indices[p] for p in positions],
        "leaf_hashes": [encode_hash(record.leaf_hashes[p]) for p in positions],
    }
    return doc


def _expand(
    doc: dict[str, Any], index: str, rows: dict[tuple[str, int], _Row]
) -> tuple[BlockRecord, list[int]]:
    """The full block record from a compact one and the archived events; and the
    positions that are neither archived nor listed (missing events)."""
    others = doc.pop("others", {}) or {}
    count = doc.get("leaf_count")
    chain = str(doc.get("chain_id"))
    first = doc.get("first_leaf")
    if type(count) is not int or type(first) is not int or count < 0:
        raise CheckpointFormatError("leaf_count and first_leaf must be integers")
    listed = {
        int(p): (str(e), str(i), decode_hash(h, f"others.leaf_hashes[{n}]"))
        for n, (p, e, i, h) in enumerate(
            zip(
                others.get("positions", []),
                others.get("event_ids", []),
                others.get("event_indices", []),
                others.get("leaf_hashes", []),
                strict=True,
            )
        )
    }
    ids: list[str] = []
    indices: list[str] = []
    hashes: list[bytes] = []
    missing: list[int] = []
    zero = bytes(32)
    for pos in range(count):
        row = rows.get((chain, first + pos))
        if pos in listed:
            eid, idx, lh = listed[pos]
        elif row is not None:
            eid, idx, lh = row.event_id, index, row.leaf
        else:
            missing.append(pos)
            eid, idx, lh = "", index, zero
        ids.append(eid)
        indices.append(idx)
        hashes.append(lh)
    # Parse the signed part as a block without events, then give it the leaves as bytes
    # (no round trip through base64 for a million leaves).
    doc.update({"event_ids": [], "event_indices": [], "leaf_hashes": []})
    shell = BlockRecord.from_document(doc)
    record = dataclasses.replace(
        shell, event_ids=tuple(ids), event_indices=tuple(indices), leaf_hashes=tuple(hashes)
    )
    return record, missing


def _verify_blocks(
    path: Path | None,
    day: str,
    index: str,
    rows: dict[tuple[str, int], _Row],
    manifest: Mapping[str, Any],
    keyring: Keyring,
    report: DayReport,
    fast_extend: FastExtend | None = None,
) -> dict[tuple[str, int], BlockRecord]:
    """Trusted blocks by (chain, sequence); places the archived events in them."""
    out: dict[tuple[str, int], BlockRecord] = {}
    if path is None:
        return out
    signed = {(b["chain_id"], b["sequence"]): b for b in manifest.get("blocks", [])}
    for n, line in enumerate(path.read_bytes().splitlines()):
        try:
            rec, missing = _expand(orjson.loads(line), index, rows)
        except (orjson.JSONDecodeError, CheckpointFormatError, ValueError, TypeError) as exc:
            report.findings.append(ArchiveFinding("malformed", day, f"blocks line {n + 1}: {exc}"))
            continue
        name = f"block {rec.chain_id}:{rec.sequence}"
        status = verify_checkpoint(rec.checkpoint, keyring)
        if status is not CheckpointStatus.OK:
            report.findings.append(ArchiveFinding(str(status), day, f"{name} signature: {status}"))
            continue
        want = signed.pop((rec.chain_id, rec.sequence), None)
        if want is None or want["root_hash"] != encode_hash(rec.checkpoint.root_hash):
            report.findings.append(
                ArchiveFinding("bad_signature", day, f"{name} is not the block the manifest signs")
            )
            continue
        for pos in missing:
            report.findings.append(
                ArchiveFinding(
                    "missing",
                    day,
                    f"sealed event at leaf {rec.chain_id}:{rec.first_leaf + pos} of {name} "
                    "is not in the archive",
                )
            )
        changed = 0
        for pos in range(len(rec.event_ids)):
            row = rows.get((rec.chain_id, rec.first_leaf + pos))
            if row is None or rec.event_indices[pos] != index:
                continue
            row.placed = True
            if not row.leaf.startswith(row.stored_prefix) or not row.stored_prefix:
                changed += 1
                report.findings.append(
                    ArchiveFinding(
                        "modified",
                        day,
                        f"event at leaf {rec.chain_id}:{rec.first_leaf + pos} differs from "
                        "what was sealed",
                        event_id=row.event_id,
                    )
                )
        problems = seal_problems(rec, fast_extend)
        if problems and not missing and not changed:
            report.findings.append(
                ArchiveFinding(
                    "bad_signature",
                    day,
                    f"{name}: the archived events and the block do not recompute to its "
                    f"signed root (an event or the block record was changed): "
                    + "; ".join(problems),
                )
            )
        out[(rec.chain_id, rec.sequence)] = rec
    for chain, seq in sorted(signed):
        report.findings.append(
            ArchiveFinding("missing", day, f"block {chain}:{seq} of the manifest is not archived")
        )
    return out


def seal_problems(rec: BlockRecord, fast_extend: FastExtend | None) -> list[str]:
    """:meth:`BlockRecord.seal_problems` (no previous checkpoint), the leaves extended
    with ``fast_extend`` when given; any disagreement is explained by the reference."""
    if fast_extend is None or rec.first_leaf + len(rec.leaf_hashes) != rec.checkpoint.tree_size:
        return rec.seal_problems(None)
    try:
        cr = CompactRange.from_state(rec.first_leaf, rec.frontier, fast_extend=fast_extend)
        cr.extend(list(rec.leaf_hashes))
    except (ProofError, ValueError):
        return rec.seal_problems(None)
    return [] if cr.root() == rec.checkpoint.root_hash else rec.seal_problems(None)


def _verify_checkpoints(
    path: Path, day: str, blocks: Mapping[tuple[str, int], BlockRecord], report: DayReport
) -> None:
    for n, line in enumerate(path.read_bytes().splitlines()):
        try:
            cp = Checkpoint.from_json_dict(orjson.loads(line))
        except (orjson.JSONDecodeError, CheckpointFormatError) as exc:
            report.findings.append(
                ArchiveFinding("malformed", day, f"checkpoints line {n + 1}: {exc}")
            )
            continue
        rec = blocks.get((cp.origin, cp.sequence))
        if rec is not None and (
            rec.checkpoint.digest() != cp.digest() or rec.checkpoint.signature != cp.signature
        ):
            report.findings.append(
                ArchiveFinding(
                    "bad_signature",
                    day,
                    f"checkpoint {cp.origin}:{cp.sequence} differs from its block's",
                )
            )
