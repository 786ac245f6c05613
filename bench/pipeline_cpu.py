"""In-process CPU cost per audit event of each receiver stage, without servers or noise.

Decodes the same pre-encoded ``ExportLogsServiceRequest`` messages as
:mod:`bench.receiver_cpu`, then times each stage the null sink runs (decode, validate,
content hash, document build, serialization) over every record, with
``time.process_time`` and the best of a few rounds, so the numbers hold still on a busy
machine.

    python -m bench.pipeline_cpu [--requests 20] [--records 500] [--rounds 5]
                                         [--profile] [--json]

``--profile`` runs the whole pipeline once under cProfile and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.figures import print_figures
from bench.receiver_cpu import TARGET_US_PER_EVENT, build_requests
from otel_audit.document import build_document, content_hash
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.validate import validate
from receiver.otlp.decode import decode_logs_protobuf


def _best(rounds: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def run(n_requests: int, n_records: int, rounds: int) -> dict[str, Any]:
    """Per-stage microseconds per event, as a dict."""
    bodies = build_requests(n_requests, n_records)
    schema = load_schema()
    now = time.time_ns()
    records: list[LogRecordData] = [r for b in bodies for r in decode_logs_protobuf(b).records]
    events = len(records)
    hashes = [content_hash(r) for r in records]
    docs = [
        build_document(r, received_ns=now, content_sha256=h, schema=schema)
        for r, h in zip(records, hashes, strict=True)
    ]
    if any(validate(r, now_ns=now, schema=schema) for r in records):
        raise SystemExit("the benchmark's records must all be valid")

    def decode() -> None:
        for b in bodies:
            decode_logs_protobuf(b)

    def check() -> None:
        for r in records:
            validate(r, now_ns=now, schema=schema)

    def hash_all() -> None:
        for r in records:
            content_hash(r)

    def build() -> None:
        for r, h in zip(records, hashes, strict=True):
            build_document(r, received_ns=now, content_sha256=h, schema=schema)

    def serialize() -> None:
        dumps = orjson.dumps
        for d in docs:
            dumps(d)

    stages = {
        "decode": decode,
        "validate": check,
        "content_hash": hash_all,
        "build_document": build,
        "serialize": serialize,
    }
    out: dict[str, Any] = {"events": events}
    total = 0.0
    for name, fn in stages.items():
        us = _best(rounds, fn) / events * 1e6
        total += us
        out[f"{name}_us"] = round(us, 2)
    out["total_us"] = round(total, 2)
    out["target_us_per_event"] = TARGET_US_PER_EVENT
    return out


def profile(n_requests: int, n_records: int) -> None:
    """Print the top functions of the whole null-sink pipeline under cProfile."""
    bodies = build_requests(n_requests, n_records)
    schema = load_schema()
    now = time.time_ns()

    def pipeline() -> None:
        for b in bodies:
            for r in decode_logs_protobuf(b).records:
                validate(r, now_ns=now, schema=schema)
                sha = content_hash(r)
                orjson.dumps(build_document(r, received_ns=now, content_sha256=sha, schema=schema))

    prof = cProfile.Profile()
    prof.runcall(pipeline)
    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.requests, args.records)
        return 0
    result = run(args.requests, args.records, args.rounds)
    print_figures(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
