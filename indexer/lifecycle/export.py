"""Read one day out of Elasticsearch for its archive, checking it against the seals first.

Nothing is archived that is not exactly what was sealed: the day's block records must be
signed by a trusted key and their leaves must recompute to their signed roots, every
event of the index must be sealed (else the day is not ready yet), every sealed event of
the index must be there, and each must hash to its sealed leaf. The ``source`` kept for an
event is the RFC 8785 form of its document: the very bytes its leaf hashes, so the
archive's verifier needs only SHA-256.

Events are read with a point in time in two slices, each page parsed, hashed and turned
into an Arrow record batch where it is read, and written to the events file page by page,
so memory stays bounded by a few pages whatever the size of the day. With the native page
reader (:data:`PageReader`, handed down by the receiver) two threads read raw search
responses and the extension parses, canonicalizes and hashes them without the GIL;
without it, worker processes read a large day (threads a small one) and Python does it.
"""

from __future__ import annotations

import binascii
import contextlib
import dataclasses
import functools
import gc
import itertools
import multiprocessing
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from elastic_transport import NodeConfig, Urllib3HttpNode
from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exc

from indexer.indices import BLOCKS_INDEX, REJECTED_INDEX_PREFIX
from indexer.integrity.blocks import KIND_BLOCK, BlockRecord
from indexer.integrity.leaf_scan import pit_pages, raw_pit_pages, worker_connection
from indexer.lifecycle.archive import (
    ARCHIVE_FIELDS,
    BLOCKS,
    CHECKPOINTS,
    EVENTS,
    REJECTED,
    DayFiles,
    compact_block,
    day_of_index,
    leaf_ranges,
    seal_problems,
    sha256_file,
)
from otel_audit.integrity import (
    DEFAULT_EXCLUDE,
    HASH_SIZE,
    Checkpoint,
    CheckpointFormatError,
    CheckpointStatus,
    Keyring,
    canonical_json,
    document_for_hashing,
    encode_hash,
    leaf_hash,
    verify_checkpoint,
)
from otel_audit.integrity.merkle import FastExtend
from otel_audit.integrity.store import CheckpointStore

__all__ = [
    "DayNotReady",
    "ExportError",
    "PageReader",
    "day_bounds",
    "export_day",
    "load_day_blocks",
]

_PAGE = 10_000
_SLICES = 2
_PROCESSES_FROM = 50_000
"""Days with at least this many events are read by worker processes (starting them costs
about a second; below this, threads are as fast)."""
_ROW_GROUP = 131_072
_SORT = orjson.OPT_SORT_KEYS


class ExportError(Exception):
    """The hot copy of a day does not match its seals: nothing is archived (run verify)."""


class DayNotReady(Exception):
    """The day still has events that are not sealed; it is archived on a later run."""


def day_bounds(day: str) -> tuple[str, str]:
    """RFC 3339 start (inclusive) and end (exclusive) of a ``YYYY.MM.DD`` day, UTC."""
    from datetime import datetime, timedelta

    start = datetime.strptime(day, "%Y.%m.%d")
    end = start + timedelta(days=1)
    return start.strftime("%Y-%m-%dT00:00:00Z"), end.strftime("%Y-%m-%dT00:00:00Z")


def load_day_blocks(
    es: Elasticsearch, index: str, keyring: Keyring, *, fast_extend: FastExtend | None = None
) -> list[BlockRecord]:
    """Every block record holding an event of ``index``, checked against its signature
    and its signed root (the leaves extended with ``fast_extend`` when given)."""
    lo, hi = day_bounds(day_of_index(index))
    # Blocks sealed a moment ago must count: read what is written, not what was refreshed.
    es.options(ignore_status=404).indices.refresh(index=f"{BLOCKS_INDEX},{index}")
    query = {
        "bool": {
            "filter": [
                {"term": {"kind": KIND_BLOCK}},
                {"range": {"time_range.gte": {"lt": hi}}},
                {"range": {"time_range.lte": {"gte": lo}}},
            ]
        }
    }
    out: list[BlockRecord] = []
    after: list[Any] | None = None
    while True:
        body: dict[str, Any] = {
            "size": 500,
            "query": query,
            "sort": [{"chain_id": "asc"}, {"sequence": "asc"}],
        }
        if after is not None:
            body["search_after"] = after
        try:
            hits = es.search(index=BLOCKS_INDEX, **body)["hits"]["hits"]
        except es_exc.NotFoundError:
            return []
        for hit in hits:
            try:
                rec = _block_of(hit["_source"])
            except CheckpointFormatError as exc:
                raise ExportError(f"block record {hit['_id']} is malformed: {exc}") from None
            if index not in rec.event_indices:
                continue
            status = verify_checkpoint(rec.checkpoint, keyring)
            if status is not CheckpointStatus.OK:
                raise ExportError(f"block {rec.doc_id}: {status}; run otel-audit verify")
            problems = seal_problems(rec, fast_extend)
            if problems:
                raise ExportError(f"block {rec.doc_id} was edited: {'; '.join(problems)}")
            out.append(rec)
        if len(hits) < 500:
            return out
        after = hits[-1]["sort"]


def _block_of(doc: dict[str, Any]) -> BlockRecord:
    """:meth:`BlockRecord.from_document` with the leaf hashes decoded in bulk (a day's
    blocks hold one per event): as strictly, one canonical base64 encoding per hash."""
    ids, indices, hashes = (doc.get(n) for n in ("event_ids", "event_indices", "leaf_hashes"))
    if not (type(ids) is list and type(indices) is list and type(hashes) is list):
        return BlockRecord.from_document(doc)  # it names what is wrong
    raw = _decode_hashes(hashes)
    if (
        raw is None
        or not set(map(type, ids)) <= _STR
        or not set(map(type, indices)) <= _STR
        or not len(ids) == len(indices) == len(raw)
    ):
        return BlockRecord.from_document(doc)
    shell = BlockRecord.from_document(
        {**doc, "event_ids": [], "event_indices": [], "leaf_hashes": []}
    )
    return dataclasses.replace(
        shell, event_ids=tuple(ids), event_indices=tuple(indices), leaf_hashes=raw
    )


_STR = frozenset({str})
_B64_HASH = 44
"""Characters of a 32-byte hash in padded base64: 43 significant, then one ``=``."""


def _decode_hashes(hashes: list[Any]) -> tuple[bytes, ...] | None:
    """The 32-byte hashes of a list of base64 strings in one decode, or None unless every
    one is the canonical padded encoding of 32 bytes (what ``a2b_base64(strict_mode=True)``
    then ``b2a_base64`` would give back unchanged).

    Each 44-character hash with its ``=`` read as ``A`` (six zero bits) is 33 bytes: the
    hash, then a byte holding the last character's two low bits, zero exactly when the
    encoding is canonical. So the strings are joined, checked to have ``=`` at the 44th
    character of each and nowhere else, and decoded at once."""
    count = len(hashes)
    if not count:
        return ()
    if not set(map(type, hashes)) <= _STR or set(map(len, hashes)) != {_B64_HASH}:
        return None
    try:
        joined = "".join(hashes).encode("ascii")
    except UnicodeEncodeError:
        return None
    if joined.count(b"=") != count or joined[_B64_HASH - 1 :: _B64_HASH] != b"=" * count:
        return None
    try:
        raw = binascii.a2b_base64(joined.replace(b"=", b"A"), strict_mode=True)
    except binascii.Error:
        return None
    step = HASH_SIZE + 1
    if len(raw) != count * step or raw[HASH_SIZE::step] != bytes(count):
        return None
    return tuple([raw[i : i + HASH_SIZE] for i in range(0, len(raw), step)])


class _EventsWriter:
    """Pages of events (Arrow record batches) into the events file, a row group at a time.

    Each row group is encoded and compressed in a thread of its own (pyarrow releases the
    GIL), while the next one is gathered; at most one is being written at a time."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        self.pa = pa
        self.pc = pc
        self.schema = pa.schema(
            [("chain", pa.string()), ("leaf", pa.int64()), *_page_schema()][:-1]
        )
        self.writer = pq.ParquetWriter(
            path,
            self.schema,
            compression="zstd",
            compression_level=EVENTS_ZSTD_LEVEL,
            use_dictionary=[
                n for n in self.schema.names if n not in ("leaf", "event_id", "source")
            ],
            write_statistics=["ts", "leaf"],
        )
        self.pending: list[Any] = []
        self.pending_rows = 0
        self.rows = 0
        self.ts_min = ""
        self.ts_max = ""
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="archive-writer")
        self.writing: Future[None] | None = None

    def extend(self, chains: Any, leaves: Any, page: _Page, keep: list[int] | None) -> None:
        """Add the rows of ``page`` (only the positions in ``keep`` when given) at the
        ``chains`` and ``leaves`` given (Arrow string and int64 arrays, one per row)."""
        pa, pc = self.pa, self.pc
        batch = page.batch if keep is None else page.batch.take(pa.array(keep, pa.int64()))
        columns = [chains, leaves]
        columns += batch.columns[:-1]  # without the full leaf hashes
        self.pending.append(pa.RecordBatch.from_arrays(columns, schema=self.schema))
        self.rows += batch.num_rows
        self.pending_rows += batch.num_rows
        ts = batch.column(1)
        present = pc.min_max(ts.filter(pc.not_equal(ts, "")))
        low, high = present["min"].as_py(), present["max"].as_py()
        if low is not None and high is not None:
            if not self.ts_min or low < self.ts_min:
                self.ts_min = low
            if high > self.ts_max:
                self.ts_max = high
        if self.pending_rows >= _ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        table = self.pa.Table.from_batches(self.pending, self.schema)
        self.pending = []
        self.pending_rows = 0
        self._wait()
        self.writing = self.pool.submit(
            self.writer.write_table, table, row_group_size=table.num_rows
        )

    def _wait(self) -> None:
        """Until the row group being written is written (its error raised here)."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            writing.result()

    def close(self) -> None:
        try:
            self.flush()
            self._wait()
        finally:
            if self.writing is not None:  # an error left one running: let it end first
                with contextlib.suppress(Exception):
                    self.writing.result()
            self.pool.shutdown()
            self.writer.close()


EVENTS_ZSTD_LEVEL = 1
"""zstd level of the events file (``python -m bench.lifecycle_bench`` reports the sizes)."""
_PREFIX = 8
"""Bytes of each event's leaf hash kept beside it: detection rests on the signed roots,
which the events recompute; the prefix only names which event changed."""
_PATHS = tuple(tuple(name.split(".")) for name in ARCHIVE_FIELDS)
_FIELDS = list(ARCHIVE_FIELDS)


@functools.cache
def _page_schema() -> Any:
    """Columns of a prepared page: the events file's, less where the events sit in the
    chains (known only to the exporter), plus each event's full leaf hash last."""
    import pyarrow as pa

    return pa.schema(
        [
            ("event_id", pa.string()),
            ("ts", pa.string()),
            *((name, pa.string()) for name in ARCHIVE_FIELDS),
            ("leaf_prefix", pa.binary()),
            ("source", pa.binary()),
            ("leaf_hash", pa.binary()),
        ]
    )


_STRING_OR_NONE = frozenset({str, type(None)})


def _scalar(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    return None if isinstance(value, (dict, list)) else str(value)


def _columns(docs: list[Any]) -> list[list[str | None]]:
    """Every one of :data:`ARCHIVE_FIELDS` of every document (a string, else None): one
    list per field, each shared parent object looked up once per document."""
    level: dict[tuple[str, ...], list[Any]] = {(): docs}
    out: list[list[str | None]] = []
    for path in _PATHS:
        for depth in range(1, len(path)):
            if path[:depth] not in level:
                key, above = path[depth - 1], level[path[: depth - 1]]
                level[path[:depth]] = [v.get(key) if type(v) is dict else None for v in above]
        key, above = path[-1], level[path[:-1]]
        column = [v.get(key) if type(v) is dict else None for v in above]
        if not set(map(type, column)) <= _STRING_OR_NONE:
            column = [_scalar(v) for v in column]
        out.append(column)
    return out


@dataclass(slots=True)
class _Page:
    """One page of events made ready for the archive where they were read: an Arrow
    record batch of :func:`_page_schema` (a worker process hands it over as Arrow IPC
    bytes, without pickling each value), and its ids and leaf hashes for the checks."""

    ids: list[str]
    leaves: list[bytes]
    """``SHA-256(0x00 || source)`` of each event."""
    batch: Any
    """Its ``source`` column holds each event's sorted-key JSON: its RFC 8785 form for
    every document the receiver builds without floats or unusual keys; the exporter
    checks each against its sealed leaf and falls back to the reference serialization
    where they differ."""

    def to_ipc(self) -> bytes:
        return bytes(self.batch.serialize())

    @classmethod
    def from_ipc(cls, data: bytes) -> _Page:
        import pyarrow as pa

        batch = pa.ipc.read_record_batch(pa.py_buffer(data), _page_schema())
        return cls(
            ids=batch.column(0).to_pylist(), leaves=batch.column(-1).to_pylist(), batch=batch
        )


def _prepare(hits: list[dict[str, Any]]) -> _Page:
    """The reference for :data:`PageReader`: a page's hits in their archived form."""
    import pyarrow as pa

    docs = [hit["_source"] for hit in hits]
    sources = [
        orjson.dumps(
            document_for_hashing(doc) if type(doc) is dict and _UNHASHED in doc else doc,
            option=_SORT,
        )
        for doc in docs
    ]
    leaves = [leaf_hash(s) for s in sources]
    ids = [hit["_id"] for hit in hits]
    timestamps: list[Any] = [d.get("@timestamp") if type(d) is dict else None for d in docs]
    if not set(map(type, timestamps)) <= {str}:
        timestamps = [t if type(t) is str else "" for t in timestamps]
    values = [ids, timestamps, *_columns(docs), [lh[:_PREFIX] for lh in leaves], sources, leaves]
    schema = _page_schema()
    batch = pa.RecordBatch.from_arrays(
        [pa.array(v, f.type) for v, f in zip(values, schema, strict=True)], schema=schema
    )
    return _Page(ids=ids, leaves=leaves, batch=batch)


_UNHASHED = DEFAULT_EXCLUDE[0]
_NativeColumn = tuple[bytes, bytes, "bytes | None", int]
PageReader = Callable[
    [bytes, list[str]],
    tuple[list[str], list[_NativeColumn], list[bytes], list[tuple[int, bytes]], "bytes | None"],
]
"""The native extension's ``archive_page``: one raw ``_search`` response in the archived
form of :func:`_prepare`, as Arrow buffers, computed without the GIL (handed down by
``receiver.lifecycle``; this package does not import the extension)."""


def _parse_page(body: bytes, native: PageReader | None) -> tuple[_Page, list[Any] | None]:
    """A raw ``_search`` response as a prepared page, and the last hit's ``sort`` values
    (None for no hits): by ``native`` when given, else by :func:`_prepare`; both give the
    same page (tests hold them equal)."""
    if native is None:
        try:
            hits = orjson.loads(body).get("hits", {}).get("hits", [])
        except orjson.JSONDecodeError as exc:
            raise ExportError(f"a search response cannot be read: {exc}") from None
        return _prepare(hits), (hits[-1]["sort"] if hits else None)
    import pyarrow as pa

    try:
        ids, columns, leaves, handed_back, last_sort = native(body, _FIELDS)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if not ids:
        return _prepare([]), None
    schema = _page_schema()
    arrays = [
        pa.Array.from_buffers(
            field.type,
            len(ids),
            [
                None if valid is None else pa.py_buffer(valid),
                pa.py_buffer(offsets),
                pa.py_buffer(data),
            ],
            null_count=nulls,
        )
        for field, (offsets, data, valid, nulls) in zip(schema, columns, strict=True)
    ]
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    if handed_back:
        batch = _python_rows(batch, ids, leaves, handed_back)
    return _Page(ids=ids, leaves=leaves, batch=batch), (
        orjson.loads(last_sort) if last_sort is not None else None
    )


def _python_rows(
    batch: Any, ids: list[str], leaves: list[bytes], handed_back: list[tuple[int, bytes]]
) -> Any:
    """``batch`` with the rows the native reader left to Python (``leaves`` updated)."""
    import pyarrow as pa

    parts: list[Any] = []
    done = 0
    for pos, raw in handed_back:
        try:
            source = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ExportError(f"event {ids[pos]} cannot be read: {exc}") from None
        row = _prepare([{"_id": ids[pos], "_source": source}])
        parts += [batch.slice(done, pos - done), row.batch]
        leaves[pos] = row.leaves[0]
        done = pos + 1
    parts.append(batch.slice(done))
    return pa.Table.from_batches(parts, batch.schema).combine_chunks().to_batches()[0]


def _canonical_instead(
    page: _Page, wants: list[tuple[str, int, bytes]], index: str, keep: list[int] | None
) -> None:
    """Give the events whose sorted-key bytes do not hash to their sealed leaf their
    RFC 8785 bytes (floats, unusual keys); raises :class:`ExportError` when those do not
    hash to it either (the stored event is not what was sealed)."""
    import pyarrow as pa

    rows = keep if keep is not None else range(len(page.ids))
    source_at = page.batch.schema.get_field_index("source")
    sources: list[bytes] = page.batch.column(source_at).to_pylist()
    for want, i in zip(wants, rows, strict=True):
        if page.leaves[i] == want[2]:
            continue
        doc = orjson.loads(sources[i])
        source = canonical_json(document_for_hashing(doc))
        leaf = leaf_hash(source)
        if leaf != want[2]:
            raise ExportError(
                f"event {page.ids[i]} in {index} differs from what was sealed at leaf "
                f"{want[0]}:{want[1]}; run otel-audit verify"
            )
        sources[i] = source
        page.leaves[i] = leaf
    columns = list(page.batch.columns)
    columns[source_at - 1] = pa.array([lh[:_PREFIX] for lh in page.leaves], pa.binary())
    columns[source_at] = pa.array(sources, pa.binary())
    columns[source_at + 1] = pa.array(page.leaves, pa.binary())
    page.batch = pa.RecordBatch.from_arrays(columns, schema=page.batch.schema)


def export_day(
    es: Elasticsearch,
    index: str,
    keyring: Keyring,
    checkpoints: CheckpointStore | None,
    directory: Path,
    *,
    progress: Callable[[int], None] | None = None,
    read_page: PageReader | None = None,
    fast_extend: FastExtend | None = None,
) -> DayFiles:
    """Write the data files of ``index``'s day into ``directory``; see the module docstring.

    ``read_page`` is the native page reader (:data:`PageReader`) when it is in use,
    ``fast_extend`` the native Merkle extension for checking the blocks' roots.

    Raises :class:`DayNotReady` or :class:`ExportError`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    blocks = load_day_blocks(es, index, keyring, fast_extend=fast_extend)
    sealed = _Sealed(blocks, index)
    writer = _EventsWriter(directory / EVENTS)
    unsealed = 0
    try:
        for page in _pages(es, index, processes=len(sealed) >= _PROCESSES_FROM, native=read_page):
            found, keep = sealed.take(page.ids)
            if keep is not None:
                unsealed += len(page.ids) - len(keep)
            chains, positions, agree = sealed.check(found, page, keep)
            if not agree:
                wants = list(
                    zip(
                        chains.to_pylist(),
                        positions.to_pylist(),
                        sealed.leaves_at(found),
                        strict=True,
                    )
                )
                _canonical_instead(page, wants, index, keep)
            writer.extend(chains, positions, page, keep)
            if progress is not None:
                progress(writer.rows)
    finally:
        writer.close()
    if unsealed:
        raise DayNotReady(f"{index}: {unsealed} events are not sealed yet")
    if sealed.left:
        some = ", ".join(sorted(sealed.left)[:5])
        raise ExportError(
            f"{len(sealed.left)} sealed events of {index} are not in it (e.g. {some}); "
            "run otel-audit verify"
        )
    cps = _checkpoints(checkpoints, blocks)
    others = sealed.others()
    (directory / BLOCKS).write_bytes(
        b"".join(
            orjson.dumps(compact_block(b, o)) + b"\n" for b, o in zip(blocks, others, strict=True)
        )
    )
    (directory / CHECKPOINTS).write_bytes(
        b"".join(orjson.dumps(c.to_json_dict(), option=_SORT) + b"\n" for c in cps)
    )
    names = [EVENTS, BLOCKS, CHECKPOINTS]
    if _write_rejected(es, day_of_index(index), directory / REJECTED):
        names.append(REJECTED)
    block_entries = [
        {
            "chain_id": b.chain_id,
            "sequence": b.sequence,
            "tree_size": b.checkpoint.tree_size,
            "root_hash": encode_hash(b.checkpoint.root_hash),
            "block_hash": encode_hash(b.checkpoint.digest()),
            "events_here": len(b.event_ids) - len(o),
        }
        for b, o in zip(blocks, others, strict=True)
    ]
    return DayFiles(
        directory=directory,
        events=writer.rows,
        time_range=(writer.ts_min, writer.ts_max) if writer.rows else None,
        files={
            n: {"sha256": sha256_file(directory / n), "bytes": (directory / n).stat().st_size}
            for n in names
        },
        blocks=block_entries,
        leaves=sealed.ranges(others),
    )


class _Sealed:
    """Where each sealed event of a day's index sits, for the checks of its pages.

    Every position of the day's blocks has a number (the blocks' positions one after
    another); ``by_id`` maps an event id to the number of the position the blocks give it
    in this index (the last one, when an id is sealed twice), and each number's chain,
    leaf index and sealed leaf hash are Arrow columns, so a page is matched with one dict
    lookup per event and checked and placed column by column.
    """

    def __init__(self, blocks: list[BlockRecord], index: str) -> None:
        import pyarrow as pa

        self.blocks = blocks
        self.index = index
        self.by_id: dict[str, int] = {}
        self.here = 0
        """Positions the blocks give this index (more than ``by_id`` holds when an id is
        sealed at several)."""
        names = sorted({b.chain_id for b in blocks})
        code_of = {name: code for code, name in enumerate(names)}
        codes: list[int] = []
        leaves: list[int] = []
        number = 0
        for rec in blocks:
            count = len(rec.event_ids)
            if rec.event_indices.count(index) == count:
                self.by_id.update(zip(rec.event_ids, range(number, number + count), strict=True))
                self.here += count
            else:
                for pos, (eid, idx) in enumerate(
                    zip(rec.event_ids, rec.event_indices, strict=True)
                ):
                    if idx == index:
                        self.by_id[eid] = number + pos
                        self.here += 1
            codes += [code_of[rec.chain_id]] * count
            leaves += range(rec.first_leaf, rec.first_leaf + count)
            number += count
        self.count = len(self.by_id)
        self.numbers = dict(self.by_id) if len(self.by_id) != self.here else None
        """A copy of ``by_id`` when some positions of this index are shadowed by a later
        one of the same id (only those in it are archived)."""
        self.chain = pa.DictionaryArray.from_arrays(
            pa.array(codes, pa.int32()), pa.array(names, pa.string())
        )
        self.leaf = pa.array(leaves, pa.int64())
        flat = b"".join(b"".join(rec.leaf_hashes) for rec in blocks)
        self.hashes = pa.Array.from_buffers(
            pa.binary(HASH_SIZE), number, [None, pa.py_buffer(flat)]
        )
        self.left = self.by_id
        """Ids not seen yet (each is taken out when its event is read)."""

    def __len__(self) -> int:
        """Sealed events of this index (distinct ids)."""
        return self.count

    def take(self, ids: list[str]) -> tuple[list[int], list[int] | None]:
        """The position numbers of a page's events, taking them out of :attr:`left`; and
        the page's rows that are sealed, None for all (an id not sealed, or seen before,
        is not)."""
        found = list(map(self.left.pop, ids, itertools.repeat(-1)))
        if -1 not in found:
            return found, None
        keep = [i for i, n in enumerate(found) if n >= 0]
        return [found[i] for i in keep], keep

    def check(self, found: list[int], page: _Page, keep: list[int] | None) -> tuple[Any, Any, bool]:
        """The chains and leaf indices of the events at ``found`` (Arrow columns), and
        whether each of the page's kept events hashes to its sealed leaf."""
        import pyarrow as pa
        import pyarrow.compute as pc

        at = pa.array(found, pa.int64())
        chains = self.chain.take(at).cast(pa.string())
        positions = self.leaf.take(at)
        got = page.batch.column(page.batch.num_columns - 1)
        if keep is not None:
            got = got.take(pa.array(keep, pa.int64()))
        try:
            agree = (
                not len(at)
                or pc.all(pc.equal(got.cast(pa.binary(HASH_SIZE)), self.hashes.take(at))).as_py()
            )
        except pa.ArrowInvalid:  # a hash of another length: compared one by one
            agree = False
        return chains, positions, bool(agree)

    def leaves_at(self, found: list[int]) -> list[bytes]:
        """The sealed leaf hashes at ``found``."""
        import pyarrow as pa

        return self.hashes.take(pa.array(found, pa.int64())).to_pylist()  # type: ignore[no-any-return]

    def others(self) -> list[list[int]]:
        """Each block's positions whose event is not in this archive (events of other
        indices, or shadowed by a later position of the same id)."""
        out: list[list[int]] = []
        archived = set(self.numbers.values()) if self.numbers is not None else None
        number = 0
        for rec in self.blocks:
            count = len(rec.event_ids)
            if archived is None and rec.event_indices.count(self.index) == count:
                out.append([])
            else:
                out.append(
                    [
                        pos
                        for pos, idx in enumerate(rec.event_indices)
                        if idx != self.index
                        or (archived is not None and number + pos not in archived)
                    ]
                )
            number += count
        return out

    def ranges(self, others: list[list[int]]) -> dict[str, list[list[int]]]:
        """:func:`leaf_ranges` of the archived positions, from the blocks' ranges less
        ``others`` (one pair per position only where a chain's blocks overlap)."""
        spans: dict[str, list[tuple[int, int]]] = {}
        for rec, skip in zip(self.blocks, others, strict=True):
            first, pos = rec.first_leaf, 0
            for stop in [*skip, len(rec.event_ids)]:
                if stop > pos:
                    spans.setdefault(rec.chain_id, []).append((first + pos, first + stop))
                pos = stop + 1
        out: dict[str, list[list[int]]] = {}
        for chain, found in sorted(spans.items()):
            found.sort()
            merged: list[list[int]] = []
            for lo, hi in found:
                if merged and lo < merged[-1][1]:  # overlapping blocks: position by position
                    return leaf_ranges(
                        (rec.chain_id, rec.first_leaf + pos)
                        for rec, skip in zip(self.blocks, others, strict=True)
                        for pos in range(len(rec.event_ids))
                        if pos not in set(skip)
                    )
                if merged and lo == merged[-1][1]:
                    merged[-1][1] = hi
                else:
                    merged.append([lo, hi])
            out[chain] = merged
        return out


def _pages(
    es: Elasticsearch, index: str, *, processes: bool, native: PageReader | None
) -> Iterator[_Page]:
    """The index's events as prepared pages, read in slices ahead of the caller: by reader
    threads over raw HTTP when ``native`` reads the pages (it runs without the GIL), else
    by worker processes for a large day (parsing and hashing then run beside this
    process), by threads otherwise or when the client's connection cannot be handed over."""
    pit = str(es.open_point_in_time(index=index, keep_alive="5m")["id"])
    try:
        connection = worker_connection(es) if processes or native is not None else None
        if connection is None:
            yield from _thread_pages(es, pit)
        elif native is not None:
            yield from _raw_thread_pages(pit, *connection, native)
        else:
            yield from _process_pages(pit, *connection)
    finally:
        with contextlib.suppress(Exception):  # it expires by itself
            es.close_point_in_time(id=pit)


def _in_threads(readers: list[Callable[[], Iterator[_Page]]]) -> Iterator[_Page]:
    """The pages of every reader, each run in a thread of its own, as they come."""
    pages: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=2 * len(readers))
    stop = threading.Event()

    def run(reader: Callable[[], Iterator[_Page]]) -> None:
        try:
            for page in reader():
                if stop.is_set():
                    return
                pages.put(("page", page))
            pages.put(("done", None))
        except BaseException as exc:
            pages.put(("error", exc))

    threads = [threading.Thread(target=run, args=(r,), daemon=True) for r in readers]
    for t in threads:
        t.start()
    done = 0
    try:
        while done < len(threads):
            what, value = pages.get()
            if what == "page":
                yield value
            elif what == "done":
                done += 1
            else:
                raise value
    finally:
        stop.set()
        while any(t.is_alive() for t in threads):
            with contextlib.suppress(queue.Empty):
                pages.get(timeout=0.1)


def _thread_pages(es: Elasticsearch, pit: str) -> Iterator[_Page]:
    def reader(slice_id: int) -> Callable[[], Iterator[_Page]]:
        def pages() -> Iterator[_Page]:
            for hits in pit_pages(es, pit, {"match_all": {}}, _PAGE, slice_id, _SLICES):
                yield _prepare(hits)

        return pages

    return _in_threads([reader(i) for i in range(_SLICES)])


def _raw_thread_pages(
    pit: str, configs: list[NodeConfig], headers: dict[str, str], native: PageReader
) -> Iterator[_Page]:
    def reader(slice_id: int) -> Callable[[], Iterator[_Page]]:
        config = configs[slice_id % len(configs)]
        return lambda: _read_slice(config, headers, pit, slice_id, native)

    return _in_threads([reader(i) for i in range(_SLICES)])


def _read_slice(
    config: NodeConfig,
    headers: dict[str, str],
    pit: str,
    slice_id: int,
    native: PageReader | None,
) -> Iterator[_Page]:
    """One slice's pages, each search response read as raw bytes and prepared at once."""

    def parse(raw: bytes) -> tuple[_Page, int, list[Any] | None]:
        page, after = _parse_page(raw, native)
        return page, len(page.ids), after

    node = Urllib3HttpNode(config)
    try:
        query: dict[str, Any] = {"match_all": {}}
        yield from raw_pit_pages(
            node, headers, pit, query, _PAGE, slice_id, _SLICES, parse, error=ExportError
        )
    finally:
        node.close()


def _export_slice(
    config: NodeConfig, headers: dict[str, str], pit: str, slice_id: int, out: Any
) -> None:
    """Worker process: read one slice and put its prepared pages on ``out``."""
    gc.disable()  # short-lived containers only; collections would cost a quarter
    try:
        for page in _read_slice(config, headers, pit, slice_id, None):
            out.put(("page", page.to_ipc()))
        out.put(("done", None))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def _process_pages(pit: str, configs: list[NodeConfig], headers: dict[str, str]) -> Iterator[_Page]:
    # Spawned, not forked: the parent's client holds open sockets and maybe threads.
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue(maxsize=4 * _SLICES)
    procs = [
        ctx.Process(
            target=_export_slice,
            args=(configs[i % len(configs)], headers, pit, i, out),
            name=f"archive-export-{i}",
            daemon=True,
        )
        for i in range(_SLICES)
    ]
    for p in procs:
        p.start()
    done = 0
    try:
        while done < len(procs):
            try:
                kind, payload = out.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise ExportError(
                        f"export reader {dead[0].name} exited with code {dead[0].exitcode}"
                    ) from None
                continue
            if kind == "page":
                yield _Page.from_ipc(payload)
            elif kind == "done":
                done += 1
            else:
                raise ExportError(f"export reader failed: {payload}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
        out.close()
        out.cancel_join_thread()


def _checkpoints(store: CheckpointStore | None, blocks: list[BlockRecord]) -> list[Checkpoint]:
    if store is None:
        return []
    wanted: dict[str, set[int]] = {}
    for b in blocks:
        wanted.setdefault(b.chain_id, set()).add(b.sequence)
    out: list[Checkpoint] = []
    for chain, seqs in sorted(wanted.items()):
        for item in store.read(chain):
            if isinstance(item, Checkpoint) and item.sequence in seqs:
                out.append(item)
    return out


def _write_rejected(es: Elasticsearch, day: str, path: Path) -> bool:
    """The day's dead letters as gzipped NDJSON; False when there are none."""
    import gzip

    index = REJECTED_INDEX_PREFIX + day
    try:
        if not es.indices.exists(index=index):
            return False
        pit = str(es.open_point_in_time(index=index, keep_alive="2m")["id"])
    except es_exc.NotFoundError:
        return False
    count = 0
    try:
        with gzip.open(path, "wb", compresslevel=6) as gz:
            for hits in pit_pages(es, pit, {"match_all": {}}, _PAGE):
                for hit in hits:
                    gz.write(orjson.dumps({"_id": hit["_id"], **hit["_source"]}) + b"\n")
                    count += 1
    finally:
        with contextlib.suppress(Exception):
            es.close_point_in_time(id=pit)
    if not count:
        path.unlink(missing_ok=True)
    return count > 0
