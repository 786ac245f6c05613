"""Benchmark the integrity primitives a verifier runs per event and per block.

Run: ``.venv/bin/python -m bench.integrity_bench [--events 1000000]``

Measures canonical JSON + leaf hash of a typical stored event document (the ``rfc8785``
reference against the checked ``orjson`` fast path), recomputing a Merkle root over
1,000,000 leaf hashes (batch and streaming), the whole per-event verifier loop, and
Ed25519 per checkpoint. Prints a table of absolute numbers and ratios.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import rfc8785

from otel_audit.integrity import (
    CompactRange,
    Keyring,
    canonical_json,
    document_for_hashing,
    fast_path_applies,
    generate_private_key,
    leaf_hash,
    leaf_hash_of_document,
    make_checkpoint,
    root_hash,
    sign_checkpoint,
    verify_checkpoint,
)

__all__ = ["main", "run", "sample_document"]

_TEMPLATE: dict[str, Any] = {
    "@timestamp": "2025-11-27T10:15:30.123456789Z",
    "event": {
        "id": "",
        "action": "invoice.update",
        "category": ["configuration"],
        "type": ["change"],
        "outcome": "success",
        "kind": "event",
        "ingested": "2025-11-27T10:15:30.200Z",
        "dataset": "audit",
    },
    "user": {"id": "u-12345", "name": "Alice Example", "type": "user"},
    "audit": {
        "category": "data_change",
        "actor": {"id": "u-12345", "type": "user", "name": "Alice Example"},
        "resource": {"type": "invoice", "id": "inv-2025-000123"},
        "correlation_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "reason": "customer requested change of billing address",
        "tenant": {"id": "tenant-42"},
        "schema_version": "1.0.0",
        "attributes": {"invoice.amount": 1234.5, "invoice.currency": "EUR", "retry": 0},
    },
    "trace": {"id": "4bf92f3577b34da6a3ce929d0e0e4736"},
    "span": {"id": "00f067aa0ba902b7"},
    "service": {
        "name": "billing-api",
        "version": "2.3.1",
        "namespace": "payments",
        "instance": {"id": "billing-api-7d9f8-abcde"},
    },
    "client": {"ip": "203.0.113.42", "address": "203.0.113.42", "untrusted": True},
    "user_agent": {
        "original": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0 Safari/537.36"
    },
    "session": {"id": "sess-9f8e7d6c5b4a"},
    "related": {"user": ["u-12345"], "ip": ["203.0.113.42"]},
    "otel": {
        "scope": {"name": "otel_audit", "version": "0.1.0"},
        "severity_number": 9,
        "observed_timestamp": "2025-11-27T10:15:30.124Z",
    },
    "integrity": {"chain_id": "receiver-0", "block": 17, "leaf_index": 0},
}


def sample_document(i: int) -> dict[str, Any]:
    """A typical stored audit event document (~1.3 KB of JSON, ~45 fields)."""
    doc = copy.deepcopy(_TEMPLATE)
    doc["event"]["id"] = f"0193c0de-7f1a-7c3e-9a4b-{i:012x}"
    doc["integrity"]["leaf_index"] = i
    return doc


# CPU time, not wall time: on a shared machine other processes inflate wall time.
_clock = time.process_time


def _per_call(fn: Callable[[], object], number: int, repeat: int = 3) -> float:
    """Best-of-``repeat`` CPU seconds per call."""
    best = float("inf")
    for _ in range(repeat):
        start = _clock()
        for _ in range(number):
            fn()
        best = min(best, (_clock() - start) / number)
    return best


def _progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def run(events: int = 1_000_000) -> list[tuple[str, float, str]]:
    """Run every measurement; returns ``(name, seconds, note)`` rows."""
    rows: list[tuple[str, float, str]] = []
    docs = [sample_document(i) for i in range(1000)]
    body = document_for_hashing(docs[0])
    size = len(canonical_json(body))
    assert fast_path_applies(body)
    assert canonical_json(body) == rfc8785.dumps(body)

    _progress("canonical JSON + leaf hash per document ...")
    ref = _per_call(lambda: leaf_hash(rfc8785.dumps(document_for_hashing(docs[1]))), 2000)
    fast = _per_call(lambda: leaf_hash_of_document(docs[1]), 20000)
    pre = _per_call(lambda: fast_path_applies(body), 20000)
    raw = _per_call(lambda: orjson.dumps(body, option=orjson.OPT_SORT_KEYS), 20000)
    rows += [
        (f"rfc8785 + leaf hash ({size} B doc)", ref, "reference"),
        ("fast path + leaf hash", fast, f"{ref / fast:.1f}x faster than rfc8785"),
        ("  of which pre-check walk", pre, f"{pre / fast:.0%} of fast path"),
        ("  of which orjson sorted dumps", raw, f"{raw / fast:.0%} of fast path"),
    ]

    _progress(f"root over {events:,} leaves ...")
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(events)]
    start = _clock()
    batch_root = root_hash(leaves)
    batch = _clock() - start
    start = _clock()
    cr = CompactRange()
    cr.extend(leaves)
    stream_root = cr.root()
    stream = _clock() - start
    assert batch_root == stream_root
    rows += [
        (f"root_hash over {events:,} leaves", batch, f"{events / batch:,.0f} leaves/s"),
        (f"CompactRange.extend {events:,} leaves", stream, f"{events / stream:,.0f} leaves/s"),
    ]
    del leaves

    _progress(f"verifier loop over {events:,} events (canonical + leaf hash + tree) ...")
    cr = CompactRange()
    append = cr.append
    start = _clock()
    done = 0
    while done < events:
        for doc in docs[: events - done]:
            append(leaf_hash_of_document(doc))
        done += min(len(docs), events - done)
    loop = _clock() - start
    rows.append(
        (f"verify loop, {events:,} events", loop, f"{events / loop:,.0f} events/s (target 50,000)")
    )

    key = generate_private_key()
    ring = Keyring([key.public_key()])
    cp = make_checkpoint(
        origin="receiver-0", tree_size=events, root_hash=stream_root, sequence=1,
        previous_hash=bytes(32),
    )  # fmt: skip
    signed = sign_checkpoint(cp, key)
    rows += [
        (
            "sign checkpoint (Ed25519)",
            _per_call(lambda: sign_checkpoint(cp, key), 2000),
            "per block",
        ),
        (
            "verify checkpoint",
            _per_call(lambda: verify_checkpoint(signed, ring), 2000),
            "per block",
        ),
    ]
    return rows


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:8.2f} s "
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.2f} ms"
    return f"{seconds * 1e6:8.2f} us"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="leaves/events to process")
    args = parser.parse_args(argv)
    rows = run(args.events)
    width = max(len(name) for name, _, _ in rows)
    print(f"{'measurement':<{width}}  {'CPU time':>11}  note")
    for name, seconds, note in rows:
        print(f"{name:<{width}}  {_fmt(seconds)}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
