"""The chain status page's data: per chain, the newest block and the newest checkpoint.

Everything comes from ``audit-blocks`` and is therefore unsigned hearsay except each
record's signed checkpoint, which is passed through whole so the browser checks its
Ed25519 signature and computes its age from the signed ``timestamp_ms``; the ages
computed here are only for clients that do not check.

Two parts come from the process serving the page rather than from Elasticsearch, through
callables handed to :func:`add_console <indexer.query.console.add_console>`: per chain the
witness cosignatures of the newest checkpoint (read from the checkpoint directory and checked
against the configured witness keys, :mod:`indexer.query.console.witnesses`), and the last
scheduled verify run. Each is ``null`` when the server has none configured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["chains_body", "shape_chains"]

MAX_CHAINS = 1000
_SOURCE = [
    "chain_id",
    "sequence",
    "kind",
    "first_leaf",
    "tree_size",
    "leaf_count",
    "sealed_at",
    "key_id",
    "time_range",
    "checkpoint",
]


def chains_body() -> dict[str, Any]:
    """One search: per chain its record count, block count, newest record and block."""
    newest = {"top_hits": {"size": 1, "sort": [{"sequence": "desc"}], "_source": _SOURCE}}
    return {
        "size": 0,
        "track_total_hits": True,
        "aggs": {
            "chains": {
                "terms": {"field": "chain_id", "size": MAX_CHAINS, "order": {"_key": "asc"}},
                "aggs": {
                    "newest": newest,
                    "blocks": {
                        "filter": {"term": {"kind": "block"}},
                        "aggs": {"newest": newest},
                    },
                },
            }
        },
    }


def _record(src: Mapping[str, Any], now_ms: int, stale_after_s: float) -> dict[str, Any]:
    cp = src.get("checkpoint") if isinstance(src.get("checkpoint"), Mapping) else {}
    ts = cp.get("timestamp_ms") if isinstance(cp, Mapping) else None
    out: dict[str, Any] = {
        "kind": src.get("kind"),
        "sequence": src.get("sequence"),
        "tree_size": src.get("tree_size"),
        "first_leaf": src.get("first_leaf"),
        "leaf_count": src.get("leaf_count"),
        "key_id": src.get("key_id"),
        "time_range": src.get("time_range"),
        "checkpoint": src.get("checkpoint"),
    }
    if isinstance(ts, int):
        age_s = max(0.0, (now_ms - ts) / 1000)
        out["age_s"] = age_s
        out["stale"] = age_s > stale_after_s
    return out


def _hit(bucket: Mapping[str, Any]) -> Mapping[str, Any] | None:
    hits = bucket.get("newest", {}).get("hits", {}).get("hits", [])
    return hits[0]["_source"] if hits else None


def shape_chains(
    raw: Mapping[str, Any],
    *,
    now_ms: int,
    stale_after_s: float,
    scheduled_verify: Mapping[str, Any] | None = None,
    witness: Callable[[str], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``/chains`` answer from the search answer of :func:`chains_body`."""
    chains: list[dict[str, Any]] = []
    buckets = raw.get("aggregations", {}).get("chains", {}).get("buckets", [])
    for bucket in buckets:
        newest = _hit(bucket)
        block = _hit(bucket.get("blocks", {}))
        last_checkpoint = _record(newest, now_ms, stale_after_s) if newest else None
        chains.append(
            {
                "chain_id": bucket["key"],
                "records": bucket["doc_count"],
                "blocks": bucket.get("blocks", {}).get("doc_count", 0),
                "last_block": _record(block, now_ms, stale_after_s) if block else None,
                "last_checkpoint": last_checkpoint,
                "witness": dict(witness(bucket["key"])) if witness is not None else None,
            }
        )
    return {
        "now_ms": now_ms,
        "stale_after_s": stale_after_s,
        "chains": chains,
        "scheduled_verify": dict(scheduled_verify) if scheduled_verify is not None else None,
    }
