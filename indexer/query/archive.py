"""Archived days answered from the cold archive: same filters, same result shape.

When the time range of ``GET /events`` reaches days whose index the lifecycle removed
(their archive is in the cold store, not purged, not restored), the page is the merge of
the hot search and a search of those days' archive files, in the API's one order
(``@timestamp`` desc, ``event.id`` asc). Each archived result is the stored document as
sealed, marked ``"integrity": {"tier": "archive", "day": ...}`` (a top-level member the
leaf hash leaves out, so a proof checked against the document still holds). Cursors work
across both: the next page continues the hot point in time after the last sort values
and the archive after the same (time, id).

An archived day's ``events.parquet`` is downloaded once into a local cache (checked
against the SHA-256 its manifest names) and filtered on its columns with pyarrow; only
the rows of the page are decoded. Free text (``q``) is matched on the decoded
documents: words and quoted phrases, all required, case-insensitive on the analysed
text fields (message, reason) and exact on the keyword fields, like the hot search.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError

from indexer.indices import EVENTS_PATTERN
from indexer.lifecycle.archive import ARCHIVE_FIELDS, EVENTS, MANIFEST, day_key
from indexer.lifecycle.config import LifecycleConfig
from indexer.lifecycle.store import ColdStore, open_cold_store
from indexer.query.filters import (
    FILTER_PARAMS,
    TEXT_FIELDS,
    Cursor,
    EventFilter,
    QueryError,
    encode_cursor,
    events_sort,
    parse_time,
)
from otel_audit.document import format_ns

__all__ = ["ArchiveSearch", "archive_search_of"]

_NO_PIT = "-"
"""The cursor's point in time when no hot index exists (the archive alone answers)."""
_AFTER_EVERY_SHARD_DOC = 2**63 - 1
_ANALYSED = ("message",)
"""Text fields; a ``.text`` sub-field (``event.reason.text``) is its parent analysed."""
_DAYS_TTL_S = 30.0
_TOKEN = re.compile(r"\w+")
_TERMS = re.compile(r'"([^"]*)"|(\S+)')
_BY_NAME = {p.name: p for p in FILTER_PARAMS}


def archive_search_of(config: Any) -> ArchiveSearch | None:
    """The archive search for a receiver configuration with a ``lifecycle`` section."""
    sections = getattr(config, "sections", None) or {}
    lifecycle = sections.get("lifecycle")
    if not isinstance(lifecycle, LifecycleConfig):
        return None
    store = open_cold_store(lifecycle.cold_store)
    cache = lifecycle.cold_store.cache_dir or None
    return ArchiveSearch(store, cache, lifecycle.cold_store.cache_max_bytes)


def _day_of(ts_ns: int) -> str:
    return time.strftime("%Y.%m.%d", time.gmtime(ts_ns // 1_000_000_000))


def _ts_ns(text: str) -> int:
    return parse_time("@timestamp", text)


class ArchiveSearch:
    """Searches the archived days of one cold store (see the module docstring)."""

    def __init__(self, store: ColdStore, cache_dir: str | None, cache_max_bytes: int) -> None:
        self.store = store
        self._own_cache = cache_dir is None
        self.cache = Path(cache_dir or tempfile.mkdtemp(prefix="otel-audit-archive-cache-"))
        self.cache.mkdir(parents=True, exist_ok=True)
        self.cache_max_bytes = cache_max_bytes
        self._days: tuple[float, list[str]] = (0.0, [])
        self._manifests: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Remove a temporary cache."""
        if self._own_cache:
            shutil.rmtree(self.cache, ignore_errors=True)

    # -- which days --------------------------------------------------------------

    def _archived(self) -> list[str]:
        """Days whose events are in the archive (manifest and events file present)."""
        at, days = self._days
        if time.monotonic() - at < _DAYS_TTL_S:
            return days
        files: dict[str, set[str]] = {}
        for key in self.store.list("days"):
            parts = key.split("/")
            if len(parts) == 3:
                files.setdefault(parts[1], set()).add(parts[2])
        days = sorted(d for d, names in files.items() if MANIFEST in names and EVENTS in names)
        self._days = (time.monotonic(), days)
        return days

    async def days_for(self, es: AsyncElasticsearch, flt: EventFilter) -> list[str]:
        """Archived (and not hot) days inside the filter's time range, newest first."""
        days = await asyncio.to_thread(self._archived)
        if not days:
            return []
        lo = _day_of(flt.from_ns) if flt.from_ns is not None else ""
        hi = _day_of(flt.to_ns - 1) if flt.to_ns is not None else "9999.99.99"
        wanted = [d for d in days if lo <= d <= hi]
        if not wanted:
            return []
        try:
            hot = list(await es.indices.get(index=EVENTS_PATTERN, allow_no_indices=True))
        except NotFoundError:
            hot = []
        hot_days = {name.rsplit("-", 1)[-1] for name in hot}
        return sorted((d for d in wanted if d not in hot_days), reverse=True)

    # -- one page ----------------------------------------------------------------

    async def page(
        self,
        es: AsyncElasticsearch,
        flt: EventFilter,
        cursor: Cursor | None,
        limit: int,
        keep_alive: str,
        events_index: str,
    ) -> dict[str, Any] | None:
        """The merged page, or None when no archived day is in range (hot search only)."""
        days = await self.days_for(es, flt)
        if not days:
            return None
        after = cursor.search_after if cursor is not None else None
        hot_hits, pit_id = await self._hot(es, flt, cursor, limit, keep_alive, events_index)
        after_key = (_ts_ns(str(after[0])), str(after[1])) if after else None
        archived = await asyncio.to_thread(self._search, flt, days, after_key, limit + 1)
        merged: list[tuple[int, str, dict[str, Any], list[Any]]] = []
        for hit in hot_hits:
            src = hit["_source"]
            merged.append((_ts_ns(str(hit["sort"][0])), str(hit["sort"][1]), src, hit["sort"]))
        for ts, eid, doc in archived:
            merged.append((ts, eid, doc, [format_ns(ts), eid, _AFTER_EVERY_SHARD_DOC]))
        merged.sort(key=lambda m: (-m[0], m[1]))
        page = merged[:limit]
        next_cursor = None
        if len(merged) > limit:
            next_cursor = encode_cursor(
                Cursor(pit_id=pit_id, search_after=list(page[-1][3]), filters=flt.canonical())
            )
        elif pit_id != _NO_PIT:
            with contextlib.suppress(ApiError):  # it expires by itself
                await es.close_point_in_time(id=pit_id)
        return {
            "events": [m[2] for m in page],
            "count": len(page),
            "next_cursor": next_cursor,
            "archived_days": days,
        }

    async def _hot(
        self,
        es: AsyncElasticsearch,
        flt: EventFilter,
        cursor: Cursor | None,
        limit: int,
        keep_alive: str,
        events_index: str,
    ) -> tuple[list[dict[str, Any]], str]:
        if cursor is None:
            try:
                pit = await es.open_point_in_time(index=events_index, keep_alive=keep_alive)
            except NotFoundError:
                return [], _NO_PIT
            pit_id = str(pit["id"])
        else:
            pit_id = cursor.pit_id
        if pit_id == _NO_PIT:
            return [], _NO_PIT
        body: dict[str, Any] = {
            "size": limit + 1,
            "query": flt.query(),
            "sort": events_sort(),
            "pit": {"id": pit_id, "keep_alive": keep_alive},
            "track_total_hits": False,
        }
        if cursor is not None:
            after = list(cursor.search_after)
            if len(after) == 2:
                after.append(_AFTER_EVERY_SHARD_DOC)
            body["search_after"] = after
        try:
            resp = await es.search(**body)
        except ApiError as exc:
            if cursor is not None and exc.status_code == 404:
                raise QueryError(
                    "cursor", "expired; start again without a cursor", status=410
                ) from None
            raise
        return list(resp["hits"]["hits"]), str(resp.get("pit_id") or pit_id)

    # -- the archive files ---------------------------------------------------------

    def _search(
        self,
        flt: EventFilter,
        days: list[str],
        after: tuple[int, str] | None,
        want: int,
    ) -> list[tuple[int, str, dict[str, Any]]]:
        """Up to ``want`` matching archived events after ``after``, newest first."""
        out: list[tuple[int, str, dict[str, Any]]] = []
        for day in days:  # newest first: every event of a day is newer than the next's
            if after is not None and day > _day_of(after[0]):
                continue
            out.extend(self._search_day(day, flt, after, want - len(out)))
            if len(out) >= want:
                break
        return out

    def _search_day(
        self, day: str, flt: EventFilter, after: tuple[int, str] | None, want: int
    ) -> list[tuple[int, str, dict[str, Any]]]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        path = self._local(day)
        if path is None:
            return []
        fields = sorted(
            {_BY_NAME[name].field for name in flt.values if _BY_NAME[name].field in ARCHIVE_FIELDS}
        )
        pf = pq.ParquetFile(path)
        table = pf.read(columns=["ts", "event_id", *fields])
        mask = pa.array([True] * table.num_rows)
        ts = table.column("ts")
        if flt.from_ns is not None:
            mask = pc.and_(mask, pc.greater_equal(ts, format_ns(flt.from_ns)))
        if flt.to_ns is not None:
            mask = pc.and_(mask, pc.less(ts, format_ns(flt.to_ns)))
        if after is not None:
            after_ts = format_ns(after[0])
            mask = pc.and_(
                mask,
                pc.or_(
                    pc.less(ts, after_ts),
                    pc.and_(pc.equal(ts, after_ts), pc.greater(table.column("event_id"), after[1])),
                ),
            )
        leftover: dict[str, tuple[str, ...]] = {}
        for name, values in flt.values.items():
            param = _BY_NAME[name]
            if param.field not in ARCHIVE_FIELDS:
                leftover[name] = values
                continue
            column = table.column(param.field)
            if param.kind == "action":
                mask = pc.and_(mask, _action_mask(column, values))
            else:
                mask = pc.and_(mask, pc.fill_null(pc.is_in(column, pa.array(list(values))), False))
        picked = table.append_column("row", pa.array(range(table.num_rows))).filter(mask)
        picked = picked.sort_by([("ts", "descending"), ("event_id", "ascending")])
        rows = picked.column("row").to_pylist()
        out: list[tuple[int, str, dict[str, Any]]] = []
        for start in range(0, len(rows), max(want, 256)):
            chunk = rows[start : start + max(want, 256)]
            for source in _sources(pf, chunk):
                doc = orjson.loads(source)
                if not _matches(doc, flt.q, leftover):
                    continue
                doc["integrity"] = {"tier": "archive", "day": day}
                out.append((_ts_ns(doc["@timestamp"]), str(doc["event"]["id"]), doc))
                if len(out) >= want:
                    return out
        return out

    def _manifest(self, day: str) -> dict[str, Any] | None:
        manifest = self._manifests.get(day)
        if manifest is None:
            raw = self.store.get_bytes(day_key(day, MANIFEST))
            if raw is None:
                return None
            manifest = orjson.loads(raw)
            self._manifests[day] = manifest
        return manifest

    def _local(self, day: str) -> Path | None:
        """The day's events file in the cache (downloaded and checked on first use)."""
        manifest = self._manifest(day)
        if manifest is None:
            return None
        meta = manifest.get("files", {}).get(EVENTS, {})
        sha = str(meta.get("sha256", ""))
        path = self.cache / f"{day}-{sha[:16]}.parquet"
        with self._lock:
            if path.exists():
                path.touch()
                return path
            tmp = path.with_suffix(".part")
            if not self.store.download(day_key(day, EVENTS), tmp):
                self._days = (0.0, [])  # purged meanwhile: list again next time
                return None
            digest = hashlib.sha256()
            with tmp.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            if digest.hexdigest() != sha:
                tmp.unlink(missing_ok=True)
                raise QueryError(
                    "from",
                    f"the archive of {day} does not match its manifest; run verify",
                    status=409,
                )
            tmp.rename(path)
            self._trim()
        return path

    def _trim(self) -> None:
        files = sorted(self.cache.glob("*.parquet"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        while files and total > self.cache_max_bytes:
            oldest = files.pop(0)
            total -= oldest.stat().st_size
            oldest.unlink(missing_ok=True)


def _sources(pf: Any, rows: list[int]) -> list[bytes]:
    """The ``source`` of the given rows, reading only the row groups that hold them."""
    meta = pf.metadata
    starts = []
    offset = 0
    for i in range(meta.num_row_groups):
        starts.append(offset)
        offset += meta.row_group(i).num_rows
    groups: dict[int, Any] = {}
    out = []
    import bisect

    for row in rows:
        g = bisect.bisect_right(starts, row) - 1
        if g not in groups:
            groups[g] = pf.read_row_group(g, columns=["source"]).column(0)
        out.append(groups[g][row - starts[g]].as_py())
    return out


def _action_mask(column: Any, values: tuple[str, ...]) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pa.array([False] * len(column))
    exact = [v for v in values if "*" not in v]
    if exact:
        mask = pc.or_(mask, pc.fill_null(pc.is_in(column, pa.array(exact)), False))
    for pattern in (v for v in values if "*" in v):
        regex = "^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$"
        mask = pc.or_(mask, pc.fill_null(pc.match_substring_regex(column, regex), False))
    return mask


def _value(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _matches(doc: Mapping[str, Any], q: str, leftover: Mapping[str, tuple[str, ...]]) -> bool:
    for name, values in leftover.items():
        if str(_value(doc, _BY_NAME[name].field)) not in values:
            return False
    if not q:
        return True
    texts = {f: _value(doc, f.removesuffix(".text")) for f in TEXT_FIELDS}
    for quoted, word in _TERMS.findall(q):
        term = quoted if quoted else word
        if not term:
            continue
        words = [w.lower() for w in _TOKEN.findall(term)]
        found = False
        for name, value in texts.items():
            if not isinstance(value, str):
                continue
            if name in _ANALYSED or name.endswith(".text"):
                tokens = [t.lower() for t in _TOKEN.findall(value)]
                n = len(words)
                if n and any(tokens[i : i + n] == words for i in range(len(tokens) - n + 1)):
                    found = True
            elif value == term:
                found = True
            if found:
                break
        if not found:
            return False
    return True
