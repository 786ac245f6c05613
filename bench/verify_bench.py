"""Benchmark ``otel-audit verify`` over a million sealed events in the real Elasticsearch.

Run: ``.venv/bin/python -m bench.verify_bench [--events 1000000] [--json]``

Loading: documents are made by the receiver's own document builder, sealed into blocks
with the sealer's primitives (leaf hashes, compact range, signed checkpoint, the
``audit-blocks`` record, the external checkpoint store) and bulk-loaded in parallel; the
data is reused when the node already holds this benchmark's load (a marker document in
``bench-verify-meta`` and matching counts). Then ``verify`` runs over all of it, exactly
as the CLI does (every check on: signatures, chain, placement, read alias), and the
events/s are printed next to the raw read rate of the same pages in the same run
(target: at least 1.0 times). Two more figures:

- ``range_verify``: ``otel-audit verify --from/--to`` over the first ``--range-events``
  events (20,000; one a millisecond), in a child process; its peak RSS (largest of the
  verifier's processes) must stay under 300 MB whatever the total stored.
  ``--range-totals 200000,400000`` measures only that, once per total stored (each is
  loaded in turn), so the RSS of one range size is compared across totals.
- ``incremental_verify``: ``verify --since`` the checkpoint sealed 10,000 events before the
  newest one (target under 2 s on 1M events).
- ``no_change_read``: what the scheduled verify's change feed
  (``indexer.integrity.changes``) costs when nothing changed, against one ``_count`` of the
  same indices in the same run: it should not grow with the events stored.

The load is static (no receiver signs heartbeats), so the freshness check is off here.

The node is the one at ``OTEL_AUDIT_ES_URL``; loading deletes its ``audit-events-*`` and
``audit-blocks`` indices.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from elastic_transport import NodeConfig, Urllib3HttpNode
from elasticsearch import Elasticsearch
from elasticsearch.serializer import OrjsonSerializer

from indexer.indices import BLOCKS_INDEX, EVENTS_TEMPLATE, event_index
from indexer.integrity.blocks import KIND_BLOCK, BlockRecord, merge_time_range
from indexer.integrity.checkpoint_store import DirectoryCheckpointStore
from indexer.integrity.leaf_scan import raw_pit_pages
from indexer.integrity.scan_worker import SEARCH_HEADERS
from indexer.integrity.verify import VerifyOptions, verify
from indexer.templates import registered_templates
from otel_audit.document import build_document, format_ns
from otel_audit.emit import event_id_at
from otel_audit.integrity import (
    GENESIS_HASH,
    CompactRange,
    Ed25519PrivateKey,
    Keyring,
    generate_private_key,
    leaf_hash_of_document,
    load_private_key,
    make_checkpoint,
    sign_checkpoint,
    write_key_pair,
)
from otel_audit.record import LogRecordData

META_INDEX = "bench-verify-meta"
DATA_VERSION = 3
CHAIN_ID = "bench-verify"
TARGET_EVENTS_PER_S = 50_000
BLOCK = 5000
RANGE_EVENTS = 20_000


def _work_dir() -> Path:
    base = os.environ.get("OTEL_AUDIT_LOCAL_ES_DATA") or "/tmp"
    return Path(base).parent / (Path(base).name + "-verify-bench")


def _client(url: str) -> Elasticsearch:
    return Elasticsearch(
        url, request_timeout=600, serializers={"application/json": OrjsonSerializer()}
    )


def _block_docs(args: tuple[int, int, int]) -> tuple[bytes, list[str], list[str], list[bytes]]:
    """One block's events: bulk body, ids, indices and leaf hashes (in a worker process)."""
    first, count, base_ns = args
    lines: list[bytes] = []
    ids: list[str] = []
    indices: list[str] = []
    hashes: list[bytes] = []
    for n in range(first, first + count):
        ts = base_ns + n * 1_000_000
        record = LogRecordData(
            attributes={
                "audit.action": "invoice.update",
                "audit.category": "data_change",
                "audit.outcome": "success",
                "audit.actor.id": f"user-{n % 997}",
                "audit.actor.type": "user",
                "audit.resource.type": "invoice",
                "audit.resource.id": f"inv-{n}",
                # Minted at the event's time, as the SDKs do (lookups by id rely on it).
                "audit.event.id": event_id_at(ts // 1_000_000, n),
            },
            resource={"service.name": "billing", "service.version": "1.4.2"},
            time_unix_nano=ts,
            body=f"invoice inv-{n} updated",
            trace_id=f"{n:032x}",
            span_id=f"{n:016x}",
        )
        doc = build_document(record, received_ns=ts + 2_000_000)
        index = event_index(ts)
        event_id = doc["event"]["id"]
        lines.append(orjson.dumps({"create": {"_index": index, "_id": event_id}}))
        lines.append(orjson.dumps(doc))
        ids.append(event_id)
        indices.append(index)
        hashes.append(leaf_hash_of_document(doc))
    return b"\n".join(lines) + b"\n", ids, indices, hashes


def _key(work: Path) -> Ed25519PrivateKey:
    path = work / "keys" / "signing-key.pem"
    if path.exists():
        return load_private_key(path)
    key = generate_private_key()
    write_key_pair(key, work / "keys")
    return key


def _loaded(es: Elasticsearch, events: int, block: int) -> bool:
    if not es.indices.exists(index=META_INDEX):
        return False
    meta = es.options(ignore_status=404).get(index=META_INDEX, id="load")
    src = meta.get("_source") if meta.get("found") else None
    if not src or src.get("version") != DATA_VERSION or src.get("events") != events:
        return False
    if src.get("block_events", BLOCK) != block:
        return False
    # The test fixtures wipe the project indices but leave this marker behind.
    if not es.indices.exists(index=BLOCKS_INDEX):
        return False
    es.indices.refresh(index="audit-events-*," + BLOCKS_INDEX)
    have = es.count(index="audit-events-*")["count"]
    blocks = es.count(index=BLOCKS_INDEX)["count"]
    return bool(have == events and blocks == src.get("blocks"))


def load(es: Elasticsearch, events: int, work: Path, block: int = BLOCK) -> None:
    """Make ``events`` sealed events in ``audit-events-*`` and ``audit-blocks``, ``block``
    events a block."""
    key = _key(work)
    if _loaded(es, events, block):
        print(f"reusing loaded data: {events:,} sealed events", file=sys.stderr)
        return
    # One name at a time: a missing concrete name fails the whole request.
    for pattern in ("audit-events-*", BLOCKS_INDEX, META_INDEX):
        es.options(ignore_status=404).indices.delete(index=pattern, expand_wildcards="all")
    store_dir = work / "checkpoints"
    if store_dir.exists():
        for child in sorted(store_dir.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
    store = DirectoryCheckpointStore(store_dir)
    for name, body in registered_templates().items():
        es.indices.put_index_template(name=name, **body)
    # Bulk-load speed: no refresh while loading. Only the highest-priority template applies,
    # so this one is the events template itself (mapping and alias) with refresh off.
    fast = copy.deepcopy(registered_templates()[EVENTS_TEMPLATE])
    fast["priority"] = 500
    fast["template"].setdefault("settings", {}).setdefault("index", {})["refresh_interval"] = "-1"
    es.indices.put_index_template(name="bench-verify-fast-load", **fast)
    base_ns = time.time_ns() - events * 1_000_000 - 60_000_000_000
    chain = CompactRange()
    sequence = -1
    last_digest = GENESIS_HASH
    began = time.monotonic()
    last_print = began
    done = 0
    blocks = 0
    errors: list[str] = []

    def bulk(body: bytes) -> None:
        resp = es.perform_request(
            "POST",
            "/_bulk",
            headers={"content-type": "application/x-ndjson", "accept": "application/json"},
            body=body,
            params={"filter_path": "errors,items.*.error"},
        ).body
        if resp.get("errors"):
            errors.append(str(resp.get("items", [])[:1]))

    def chunks() -> Iterator[tuple[int, int, int]]:
        for first in range(0, events, block):
            yield first, min(block, events - first), base_ns

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(max(1, os.cpu_count() or 2)) as pool, ThreadPoolExecutor(3) as senders:
        futures = []
        for payload, ids, indices, hashes in pool.imap(_block_docs, chunks()):
            futures.append(senders.submit(bulk, payload))
            frontier = chain.state()[1]
            first_leaf = chain.size
            chain.extend(hashes)
            sequence += 1
            # Sealed just after its last event was received, as the receiver does.
            last_received_ns = base_ns + (chain.size - 1) * 1_000_000 + 2_000_000
            cp = sign_checkpoint(
                make_checkpoint(
                    origin=CHAIN_ID,
                    tree_size=chain.size,
                    root_hash=chain.root(),
                    sequence=sequence,
                    previous_hash=last_digest,
                    timestamp_ms=last_received_ns // 1_000_000 + 5,
                ),
                key,
            )
            first_ts = format_ns(base_ns + (first_leaf) * 1_000_000)
            last_ts = format_ns(base_ns + (first_leaf + len(ids) - 1) * 1_000_000)
            record = BlockRecord(
                kind=KIND_BLOCK,
                checkpoint=cp,
                first_leaf=first_leaf,
                event_ids=tuple(ids),
                event_indices=tuple(indices),
                leaf_hashes=tuple(hashes),
                frontier=frontier,
                time_range=merge_time_range([first_ts, last_ts]),
            )
            es.create(index=BLOCKS_INDEX, id=record.doc_id, document=record.to_document())
            store.append(cp)
            last_digest = cp.digest()
            blocks += 1
            done += len(ids)
            if len(futures) > 6:
                futures.pop(0).result()
            if errors:
                raise RuntimeError(f"bulk errors: {errors[0]}")
            now = time.monotonic()
            if now - last_print >= 5:
                last_print = now
                rate = done / (now - began)
                print(f"load: {done:,}/{events:,} events, {rate:,.0f}/s", file=sys.stderr)
        for f in futures:
            f.result()
    if errors:
        raise RuntimeError(f"bulk errors: {errors[0]}")
    es.indices.delete_index_template(name="bench-verify-fast-load")
    es.indices.put_settings(index="audit-events-*", settings={"index": {"refresh_interval": "1s"}})
    es.indices.refresh(index=f"audit-events-*,{BLOCKS_INDEX}")
    print(f"load: {done:,} events in {time.monotonic() - began:.0f} s; merging", file=sys.stderr)
    es.options(request_timeout=1800).indices.forcemerge(index="audit-events-*", max_num_segments=1)
    es.index(
        index=META_INDEX,
        id="load",
        document={
            "version": DATA_VERSION,
            "events": events,
            "blocks": blocks,
            "block_events": block,
        },
        refresh=True,
    )


def _raw_slice(url: str, pit: str, slice_id: int, slices: int, size: int) -> tuple[int, int]:
    """Pull one slice's pages as the verifier's workers do, parsing only to page on."""
    node = Urllib3HttpNode(NodeConfig(**_node_args(url)))
    raw_bytes = 0

    def parse(raw: bytes) -> tuple[int, int, list[Any] | None]:
        nonlocal raw_bytes
        raw_bytes += len(raw)
        page = orjson.loads(raw).get("hits", {}).get("hits", [])
        return len(page), len(page), page[-1]["sort"] if page else None

    pages = raw_pit_pages(
        node, dict(SEARCH_HEADERS), pit, {"match_all": {}}, size, slice_id, slices, parse
    )
    return sum(pages), raw_bytes


def _node_args(url: str) -> dict[str, Any]:
    parsed = urlsplit(url)
    return {
        "scheme": parsed.scheme,
        "host": parsed.hostname or "127.0.0.1",
        "port": parsed.port or 9200,
    }


def raw_read(es: Elasticsearch, url: str, slices: int, size: int = 10000) -> dict[str, Any]:
    """Events/s of only pulling the pages (one process per slice): the ceiling for verify."""
    pit = es.open_point_in_time(index="audit-events-*", keep_alive="2m")["id"]
    try:
        began = time.monotonic()
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(slices, mp_context=ctx) as pool:
            parts = list(
                pool.map(
                    _raw_slice,
                    [url] * slices,
                    [pit] * slices,
                    range(slices),
                    [slices] * slices,
                    [size] * slices,
                )
            )
        elapsed = time.monotonic() - began
    finally:
        es.close_point_in_time(id=pit)
    hits = sum(p[0] for p in parts)
    return {
        "slices": slices,
        "events": hits,
        "seconds": round(elapsed, 2),
        "events_per_s": round(hits / elapsed),
        "mb_per_s": round(sum(p[1] for p in parts) / elapsed / 1e6, 1),
    }


def _time_span(es: Elasticsearch) -> tuple[str, str]:
    aggs = es.search(
        index="audit-events-*",
        size=0,
        aggs={"lo": {"min": {"field": "@timestamp"}}, "hi": {"max": {"field": "@timestamp"}}},
    )["aggregations"]
    return aggs["lo"]["value_as_string"], aggs["hi"]["value_as_string"]


_MEASURED_CLI = """
import glob, sys, threading

def hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

readers = {}
def watch():
    while True:
        for path in glob.glob("/proc/self/task/*/children"):
            try:
                pids = open(path).read().split()
            except OSError:
                continue
            for pid in pids:
                readers[pid] = max(readers.get(pid, 0), hwm(pid))
        threading.Event().wait(0.2)

threading.Thread(target=watch, daemon=True).start()
from otel_audit.cli import main
code = main(sys.argv[1:])
sys.stderr.write(f"peak_rss_kb {hwm('self')} {max(readers.values(), default=0)}\\n")
sys.exit(code)
"""
# The verify command in a fresh interpreter that reports its own peak RSS and that of its
# reader processes, each read from /proc (VmHWM, the peak since the process's exec).
# Not getrusage's ru_maxrss: Linux carries it across fork and exec, so a child started
# by a big process (this benchmark after its full verify, or the verifier for its
# readers) would report its parent's size, not its own.


def range_verify(
    es: Elasticsearch, url: str, work: Path, range_events: int = RANGE_EVENTS
) -> dict[str, Any]:
    """``otel-audit verify --from/--to`` over the first ``range_events`` events (one a
    millisecond), in a child: peak RSS."""
    import subprocess
    from datetime import datetime, timedelta

    lo, _hi = _time_span(es)
    t0 = datetime.fromisoformat(lo.replace("Z", "+00:00"))
    to = (t0 + timedelta(milliseconds=range_events - 1)).isoformat().replace("+00:00", "Z")
    began = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURED_CLI,
            "verify",
            "--es-url",
            url,
            "--public-key",
            str(work / "keys"),
            "--checkpoint-dir",
            str(work / "checkpoints"),
            "--chain",
            CHAIN_ID,
            "--from",
            lo,
            "--to",
            to,
            "--stale-after-s",
            "0",
            "--quiet",
            "--json",
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    elapsed = time.monotonic() - began
    rss = [line for line in proc.stderr.decode().splitlines() if line.startswith("peak_rss_kb ")]
    own_kb, workers_kb = (int(x) for x in rss[-1].split()[1:3]) if rss else (0, 0)
    out = orjson.loads(proc.stdout) if proc.stdout.strip().startswith(b"{") else {}
    summary = out.get("summary", {})
    return {
        "total_events": es.count(index="audit-events-*")["count"],
        "from": lo,
        "to": to,
        "exit": proc.returncode,
        "events_checked": summary.get("events_checked"),
        "findings": summary.get("findings"),
        "seconds": round(elapsed, 2),
        "peak_rss_mb": round(max(own_kb, workers_kb) / 1024, 1),
        "verifier_rss_mb": round(own_kb / 1024, 1),
        "reader_rss_mb": round(workers_kb / 1024, 1),
        "target_rss_mb": 300,
    }


def incremental_verify(
    es: Elasticsearch, ring: Keyring, store: DirectoryCheckpointStore, new_events: int
) -> dict[str, Any]:
    """``verify --since`` the checkpoint ``new_events`` before the newest: time."""
    checkpoints = [c for c in store.read(CHAIN_ID) if not isinstance(c, Exception)]
    newest = checkpoints[-1]
    since = next(
        (c for c in reversed(checkpoints) if newest.tree_size - c.tree_size >= new_events),
        checkpoints[0],
    )
    report = verify(
        es,
        ring,
        store,
        VerifyOptions(since=since, grace_s=0.0, stale_after_s=0, slices=1, processes=False),
    )
    return {
        "since_tree_size": since.tree_size,
        "new_events": newest.tree_size - since.tree_size,
        "events_checked": report.events_checked,
        "findings": report.counts(),
        "seconds": round(report.elapsed_s, 3),
        "target_s": 2.0,
    }


def no_change_read(es: Elasticsearch, repeat: int = 5) -> dict[str, Any]:
    """The change feed over an unchanged store, against one ``_count``: median times."""
    import statistics

    from indexer.indices import EVENTS_PATTERN
    from indexer.integrity.changes import read_changes

    mark = read_changes(es, None).watermark
    feed: list[float] = []
    count: list[float] = []
    requests = fetched = 0
    for _ in range(repeat):
        began = time.perf_counter()
        changes = read_changes(es, mark)
        feed.append(time.perf_counter() - began)
        requests, fetched = changes.requests, changes.fetched
        began = time.perf_counter()
        es.count(index=EVENTS_PATTERN)
        count.append(time.perf_counter() - began)
    feed_s, count_s = statistics.median(feed), statistics.median(count)
    return {
        "seconds": round(feed_s, 4),
        "requests": requests,
        "documents_read": fetched,
        "count_request_s": round(count_s, 4),
        "to_count_request": round(feed_s / count_s, 1) if count_s else None,
    }


def _connect(url: str | None) -> tuple[str, Path, Elasticsearch]:
    """The node's URL, this benchmark's work directory and a client."""
    url = url or os.environ.get("OTEL_AUDIT_ES_URL", "http://127.0.0.1:9200")
    work = _work_dir()
    work.mkdir(parents=True, exist_ok=True)
    return url, work, _client(url)


def range_by_total(
    totals: list[int],
    range_events: int = RANGE_EVENTS,
    url: str | None = None,
    block: int = BLOCK,
) -> dict[str, Any]:
    """Range-verify RSS for one range size at each total stored (loading each in turn)."""
    url, work, es = _connect(url)
    runs: list[dict[str, Any]] = []
    try:
        for total in totals:
            load(es, total, work, block)
            runs.append(range_verify(es, url, work, range_events))
            print(f"range verify at {total:,}: {runs[-1]}", file=sys.stderr)
    finally:
        es.close()
    first, last = runs[0], runs[-1]
    return {
        "range_events": range_events,
        "block_events": block,
        "range_verify_by_total": runs,
        "verifier_rss_growth_mb": round(last["verifier_rss_mb"] - first["verifier_rss_mb"], 1),
        "reader_rss_growth_mb": round(last["reader_rss_mb"] - first["reader_rss_mb"], 1),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def run(
    events: int,
    url: str | None = None,
    slices: int = 2,
    baseline: bool = True,
    range_events: int = RANGE_EVENTS,
    block: int = BLOCK,
) -> dict[str, Any]:
    """Load (or reuse) ``events`` sealed events and time one full verify; the figures."""
    url, work, es = _connect(url)
    raw: list[dict[str, Any]] = []
    try:
        load(es, events, work, block)
        key = _key(work)
        if baseline:
            for n in sorted({1, slices}):
                raw.append(raw_read(es, url, n))
                print(f"raw read: {raw[-1]}", file=sys.stderr)

        def progress(n: int, elapsed: float) -> None:
            print(f"verify: {n:,} events, {n / max(elapsed, 1e-9):,.0f}/s", file=sys.stderr)

        ring = Keyring([key.public_key()])
        store = DirectoryCheckpointStore(work / "checkpoints")
        report = verify(
            es,
            ring,
            store,
            VerifyOptions(
                chain_id=CHAIN_ID,
                grace_s=0.0,
                stale_after_s=0,
                page_size=10000,
                slices=slices,
                progress=progress,
            ),
        )
        ranged = range_verify(es, url, work, range_events)
        print(f"range verify: {ranged}", file=sys.stderr)
        incremental = incremental_verify(es, ring, store, min(10_000, events // 2))
        print(f"incremental verify: {incremental}", file=sys.stderr)
        unchanged = no_change_read(es)
        print(f"no-change read: {unchanged}", file=sys.stderr)
    finally:
        es.close()
    rate = report.events_checked / report.elapsed_s if report.elapsed_s else 0.0
    best_raw = max((r["events_per_s"] for r in raw), default=0)
    return {
        "events": events,
        "block_events": block,
        "events_checked": report.events_checked,
        "blocks_checked": report.blocks_checked,
        "findings": report.counts(),
        "verify_s": round(report.elapsed_s, 2),
        "events_per_s": round(rate),
        "slices": slices,
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "meets_target": rate >= TARGET_EVENTS_PER_S,
        "raw_read": raw,
        "verify_to_raw_read": round(rate / best_raw, 2) if best_raw else None,
        "range_verify": ranged,
        "incremental_verify": incremental,
        "no_change_read": unchanged,
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit 0 when verify was clean (the rate is reported, not enforced)."""
    parser = argparse.ArgumentParser(prog="bench.verify_bench", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="sealed events to verify")
    parser.add_argument("--quick", action="store_true", help="100,000 events")
    parser.add_argument("--slices", type=int, default=2, help="parallel scan slices")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip timing the raw page reads first"
    )
    parser.add_argument(
        "--range-events",
        type=int,
        default=RANGE_EVENTS,
        help="events in the --from/--to range verified (default 20,000)",
    )
    parser.add_argument(
        "--block-events",
        type=int,
        default=BLOCK,
        help="events a block when loading (5,000; a quiet receiver seals far fewer)",
    )
    parser.add_argument(
        "--range-totals",
        metavar="N,N,...",
        help="only the range verify, once per total stored (e.g. 200000,400000)",
    )
    args = parser.parse_args(argv)
    events = 100_000 if args.quick else args.events
    if min(events, args.range_events, args.block_events) < 1:
        parser.error("--events, --range-events and --block-events must be at least 1")
    if args.range_totals:
        try:
            totals = [int(t) for t in args.range_totals.split(",")]
        except ValueError:
            parser.error(f"--range-totals {args.range_totals!r}: give sizes like 200000,400000")
        if any(t < args.range_events for t in totals):
            parser.error("each --range-totals size must hold --range-events events")
        by_total = range_by_total(totals, args.range_events, block=args.block_events)
        sys.stdout.write(orjson.dumps(by_total, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0 if all(r["exit"] == 0 for r in by_total["range_verify_by_total"]) else 1
    figures = run(
        events,
        slices=max(1, args.slices),
        baseline=not args.no_baseline,
        range_events=args.range_events,
        block=args.block_events,
    )
    if args.json:
        sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for k, v in figures.items():
            sys.stdout.write(f"{k:22} {v}\n")
    clean = (
        not figures["findings"]
        and figures["events_checked"] == events
        and figures["range_verify"]["exit"] == 0
        and not figures["incremental_verify"]["findings"]
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
