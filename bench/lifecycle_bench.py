"""Benchmark the lifecycle on sealed events in the real Elasticsearch and the real S3 server.

Run: ``.venv/bin/python -m bench.lifecycle_bench [--events 1000000 | --quick] [--json]``

The events are :mod:`bench.verify_bench`'s load (receiver-built documents sealed into
signed blocks; reused when the node already holds it). Each daily index is archived as
the lifecycle does it, phase by phase, into a local s3proxy started here:

- ``raw_read``: only pulling the same events' pages from Elasticsearch (2 slices, one
  process each, pages parsed with orjson), the ceiling any export shares, measured in
  the same run: as the export's readers do it (garbage collector off: a page is some
  hundred thousand short-lived containers) and, for comparison with earlier runs, with
  the collector on (``raw_read_gc_on``);
- ``archive``: export checked against the seals and written as Parquet, upload, manifest,
  then the read-back verification (download, hash every event, check every block), in
  events/s for the whole and for each phase; target at least 50,000 events/s;
- ``size``: the archive's bytes per event against the Elasticsearch index's store size
  (primaries, after the loader's force merge); target at most 1/4. The same events are
  also written as NDJSON compressed with gzip and with zstd, for the format choice;
- ``restore``: re-indexing the archived events into a fresh index with the events
  template, in events/s;
- ``cpu_us_per_event``: CPU per event of each of those, on this side (this process and
  the export's reader processes) and in Elasticsearch (its nodes stats), and the rate
  that cost allows with every core to itself (``*_cpu_bound_events_per_s``): on a shared
  machine the wall-clock rates measure the neighbours too (``load_average``).

The indices stay as loaded (nothing is deleted), so the verify benchmark can reuse them.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from elasticsearch import Elasticsearch

from bench import verify_bench
from indexer.indices import EVENTS_PATTERN
from indexer.integrity.checkpoint_store import DirectoryCheckpointStore
from indexer.lifecycle.archive import (
    EVENTS,
    MANIFEST,
    day_key,
    day_of_index,
    manifest_body,
    verify_day,
)
from indexer.lifecycle.export import export_day
from indexer.lifecycle.restore import restore_file
from indexer.lifecycle.signed import sign_record
from indexer.lifecycle.store import S3Store, s3_client
from indexer.local_s3 import LocalS3, LocalS3Config
from indexer.templates import registered_templates
from otel_audit.integrity import Keyring
from receiver import native

TARGET_ARCHIVE_EVENTS_PER_S = 50_000
TARGET_SIZE_RATIO = 0.25
RESTORE_INDEX = "bench-lifecycle-restore"
BUCKET = "bench-lifecycle"


def _es_cpu_s(es: Elasticsearch) -> float:
    """CPU seconds the Elasticsearch node(s) have used so far (the nodes stats API)."""
    nodes = es.nodes.stats(metric="process")["nodes"].values()
    return float(sum(n["process"]["cpu"]["total_in_millis"] for n in nodes)) / 1000.0


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its finished children (the export's readers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class _Cpu:
    """CPU used between two points, by this benchmark's processes and by Elasticsearch."""

    def __init__(self, es: Elasticsearch) -> None:
        self.es = es
        self.client = _own_cpu_s()
        self.node = _es_cpu_s(es)

    def used(self) -> tuple[float, float]:
        return _own_cpu_s() - self.client, _es_cpu_s(self.es) - self.node


def _store_size(es: Elasticsearch, index: str) -> int:
    stats = es.indices.stats(index=index, metric="store")
    return int(stats["_all"]["primaries"]["store"]["size_in_bytes"])


def _ndjson_sizes(parquet: Path) -> dict[str, Any]:
    """The same events (their ``source`` bytes) as compressed NDJSON, for comparison."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = b"".join(
        s + b"\n" for s in pq.read_table(parquet, columns=["source"]).column(0).to_pylist()
    )
    out: dict[str, Any] = {"ndjson_bytes": len(raw)}
    began = time.process_time()
    out["ndjson_gzip6_bytes"] = len(gzip.compress(raw, compresslevel=6))
    out["ndjson_gzip6_cpu_s"] = round(time.process_time() - began, 2)
    codec = pa.Codec("zstd", compression_level=6)
    began = time.process_time()
    out["ndjson_zstd6_bytes"] = codec.compress(raw).size
    out["ndjson_zstd6_cpu_s"] = round(time.process_time() - began, 2)
    return out


def _raw_slice_gc_off(url: str, pit: str, slice_id: int, slices: int) -> tuple[int, int]:
    gc.disable()
    return verify_bench._raw_slice(url, pit, slice_id, slices, 10_000)


def _raw_read(es: Elasticsearch, url: str, slices: int) -> dict[str, Any]:
    """:func:`bench.verify_bench.raw_read` as the export's reader processes read (the
    garbage collector off)."""
    pit = es.open_point_in_time(index=EVENTS_PATTERN, keep_alive="2m")["id"]
    try:
        began = time.monotonic()
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(slices, mp_context=ctx) as pool:
            parts = list(
                pool.map(
                    _raw_slice_gc_off,
                    [url] * slices,
                    [pit] * slices,
                    range(slices),
                    [slices] * slices,
                )
            )
        elapsed = time.monotonic() - began
    finally:
        es.close_point_in_time(id=pit)
    hits = sum(p[0] for p in parts)
    return {"slices": slices, "events": hits, "events_per_s": round(hits / elapsed)}


def run(events: int, url: str | None = None, *, python_reader: bool = False) -> dict[str, Any]:
    """Load (or reuse) ``events`` sealed events, archive and restore them; the figures."""
    url = url or os.environ.get("OTEL_AUDIT_ES_URL", "http://127.0.0.1:9200")
    work = verify_bench._work_dir()
    work.mkdir(parents=True, exist_ok=True)
    es = verify_bench._client(url)
    s3_config = LocalS3Config.from_env(data_dir=work / "s3")
    s3 = LocalS3(config=s3_config)
    started = s3.ensure_started()
    tmp = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    try:
        verify_bench.load(es, events, work)
        key = verify_bench._key(work)
        keyring = Keyring([key.public_key()])
        cpu = _Cpu(es)
        raw_gc_on = verify_bench.raw_read(es, url, 2)
        raw_gc_on_cpu = cpu.used()
        print(f"raw read, collector on: {raw_gc_on}", file=sys.stderr)
        cpu = _Cpu(es)
        raw = _raw_read(es, url, 2)
        raw_cpu = cpu.used()
        print(f"raw read: {raw}", file=sys.stderr)
        s3.ensure_bucket(BUCKET)
        opts = s3.client_options()
        store = S3Store(
            BUCKET,
            f"run-{int(time.time())}",
            s3_client(
                endpoint_url=opts["endpoint_url"],
                aws_access_key_id=opts["aws_access_key_id"],
                aws_secret_access_key=opts["aws_secret_access_key"],
            ),
            s3.url,
        )
        checkpoints = DirectoryCheckpointStore(work / "checkpoints")
        ext = native.module()
        fast_extend = getattr(ext, "merkle_extend", None) if ext is not None else None
        read_page = getattr(ext, "archive_page", None) if ext is not None else None
        fast_leaves = getattr(ext, "leaf_hashes", None) if ext is not None else None
        if python_reader:
            read_page = fast_leaves = fast_extend = None
        indices = sorted(es.indices.get(index=EVENTS_PATTERN))
        phases = {"export_s": 0.0, "upload_s": 0.0, "verify_s": 0.0}
        archive_bytes = events_archived = 0
        es_bytes = 0
        sizes: dict[str, Any] = {}
        first: tuple[Path, int, int] | None = None
        cpu = _Cpu(es)
        began = time.monotonic()
        for index in indices:
            day = day_of_index(index)
            es_bytes += _store_size(es, index)
            out = tmp / day
            t0 = time.monotonic()
            files = export_day(
                es, index, keyring, checkpoints, out, read_page=read_page, fast_extend=fast_extend
            )
            t1 = time.monotonic()
            for name in files.files:
                store.put_file(day_key(day, name), out / name)
            manifest = sign_record(manifest_body(day, index, files, int(time.time() * 1000)), key)
            store.put_bytes(day_key(day, MANIFEST), orjson.dumps(manifest))
            t2 = time.monotonic()
            report = verify_day(
                store, day, keyring, workdir=tmp, fast_extend=fast_extend, fast_leaves=fast_leaves
            )
            t3 = time.monotonic()
            if not report.ok or report.events != files.events:
                raise RuntimeError(f"{day}: archive did not verify: {report.to_json_dict()}")
            phases["export_s"] += t1 - t0
            phases["upload_s"] += t2 - t1
            phases["verify_s"] += t3 - t2
            archive_bytes += sum(int(f["bytes"]) for f in files.files.values())
            events_archived += files.events
            print(f"archived {day}: {files.events:,} events in {t3 - t0:.1f} s", file=sys.stderr)
            if first is None:
                first = (out / EVENTS, int(files.files[EVENTS]["bytes"]), files.events)
        archive_s = time.monotonic() - began
        archive_cpu = cpu.used()
        if first is not None:
            # Outside the timed run: the format comparison compresses the events again.
            sizes = _ndjson_sizes(first[0])
            sizes["parquet_bytes"] = first[1]
            sizes["sample_events"] = first[2]

        # Restore into a fresh index with the events template's settings and mappings.
        template = registered_templates()["otel-audit-events"]["template"]
        es.options(ignore_status=404).indices.delete(index=RESTORE_INDEX)
        es.indices.create(
            index=RESTORE_INDEX,
            settings=template.get("settings", {}),
            mappings=template.get("mappings", {}),
        )
        restored = 0
        cpu = _Cpu(es)
        began = time.monotonic()
        for index in indices:
            day = day_of_index(index)
            path = tmp / f"{day}-restore.parquet"
            store.download(day_key(day, EVENTS), path)
            restored += restore_file(es, path, RESTORE_INDEX)
        es.indices.refresh(index=RESTORE_INDEX)
        restore_s = time.monotonic() - began
        restore_cpu = cpu.used()
        es.indices.delete(index=RESTORE_INDEX)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        es.close()
        if started:
            s3.stop()
    rate = events_archived / archive_s if archive_s else 0.0
    cores = os.cpu_count() or 1
    ratio = archive_bytes / es_bytes if es_bytes else None
    return {
        "events": events,
        "events_archived": events_archived,
        "page_reader": "native" if read_page is not None else "python",
        "raw_read_events_per_s": raw["events_per_s"],
        "raw_read_gc_on_events_per_s": raw_gc_on["events_per_s"],
        "archive_s": round(archive_s, 2),
        "archive_events_per_s": round(rate),
        "archive_to_raw_read": round(rate / raw["events_per_s"], 2)
        if raw["events_per_s"]
        else None,
        "phase_events_per_s": {
            k.removesuffix("_s"): round(events_archived / v) if v else None
            for k, v in phases.items()
        },
        "meets_archive_target": rate >= TARGET_ARCHIVE_EVENTS_PER_S,
        "cpu_us_per_event": {
            "raw_read": _per_event(raw_cpu, raw["events"]),
            "raw_read_gc_on": _per_event(raw_gc_on_cpu, raw_gc_on["events"]),
            "archive": _per_event(archive_cpu, events_archived),
            "restore": _per_event(restore_cpu, restored),
        },
        "cores": cores,
        "archive_cpu_bound_events_per_s": _cpu_bound_rate(archive_cpu, events_archived, cores),
        "restore_cpu_bound_events_per_s": _cpu_bound_rate(restore_cpu, restored, cores),
        "es_store_bytes": es_bytes,
        "archive_bytes": archive_bytes,
        "es_bytes_per_event": round(es_bytes / events_archived, 1) if events_archived else None,
        "archive_bytes_per_event": round(archive_bytes / events_archived, 1)
        if events_archived
        else None,
        "archive_to_es_size": round(ratio, 3) if ratio is not None else None,
        "meets_size_target": ratio is not None and ratio <= TARGET_SIZE_RATIO,
        "format_comparison": sizes,
        "restore_s": round(restore_s, 2),
        "restore_events_per_s": round(restored / restore_s) if restore_s else None,
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _per_event(cpu: tuple[float, float], events: int) -> dict[str, float | None]:
    """Microseconds of CPU per event on the client side and in Elasticsearch."""
    if not events:
        return {"client": None, "elasticsearch": None}
    return {
        "client": round(cpu[0] / events * 1e6, 1),
        "elasticsearch": round(cpu[1] / events * 1e6, 1),
    }


def _cpu_bound_rate(cpu: tuple[float, float], events: int, cores: int) -> int | None:
    """Events/s the measured CPU cost allows when the run has every core to itself: the
    figure to read beside the wall-clock rate on a machine shared with other work (the
    load average is reported with it)."""
    total = cpu[0] + cpu[1]
    return round(events * cores / total) if total > 0 and events else None


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit 0 when every event was archived, verified and restored."""
    parser = argparse.ArgumentParser(prog="bench.lifecycle_bench", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="sealed events")
    parser.add_argument("--quick", action="store_true", help="100,000 events")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--python-reader",
        action="store_true",
        help="export with the Python page reader (the baseline of the native one)",
    )
    args = parser.parse_args(argv)
    events = 100_000 if args.quick else args.events
    figures = run(events, python_reader=args.python_reader)
    if args.json:
        sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for k, v in figures.items():
            sys.stdout.write(f"{k:26} {v}\n")
    return 0 if figures["events_archived"] == events else 1


if __name__ == "__main__":
    sys.exit(main())
