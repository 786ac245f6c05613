"""Aggregate counts for ``GET /stats``: by category, outcome, action, top actors and
resources, services, and events over time.

The histogram interval is picked from a fixed ladder so a range yields at most
:data:`MAX_BUCKETS` buckets; empty buckets are returned too, so a chart has no gaps.
"""

from __future__ import annotations

import time
from typing import Any

from indexer.query.filters import EventFilter
from otel_audit.document import format_ns

__all__ = ["DEFAULT_WINDOW_NS", "MAX_BUCKETS", "pick_interval", "shape_stats", "stats_body"]

DEFAULT_WINDOW_NS = 24 * 3600 * 1_000_000_000
MAX_BUCKETS = 120
_LADDER: tuple[tuple[str, int], ...] = (
    ("1s", 1),
    ("5s", 5),
    ("10s", 10),
    ("30s", 30),
    ("1m", 60),
    ("5m", 300),
    ("10m", 600),
    ("30m", 1800),
    ("1h", 3600),
    ("3h", 10800),
    ("6h", 21600),
    ("12h", 43200),
    ("1d", 86400),
    ("7d", 7 * 86400),
    ("30d", 30 * 86400),
)


def pick_interval(span_ns: int) -> str:
    """The smallest ladder step giving at most :data:`MAX_BUCKETS` buckets."""
    span_s = max(span_ns // 1_000_000_000, 1)
    for name, secs in _LADDER:
        if span_s / secs <= MAX_BUCKETS:
            return name
    return _LADDER[-1][0]


def _window(flt: EventFilter, now_ns: int | None) -> tuple[int, int]:
    now = time.time_ns() if now_ns is None else now_ns
    to_ns = flt.to_ns if flt.to_ns is not None else now
    from_ns = flt.from_ns if flt.from_ns is not None else to_ns - DEFAULT_WINDOW_NS
    return from_ns, to_ns


def stats_body(
    flt: EventFilter, top: int, now_ns: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The search body and the window/interval it covers.

    Without ``from``/``to`` the window is the last 24 hours.
    """
    from_ns, to_ns = _window(flt, now_ns)
    windowed = EventFilter(values=flt.values, from_ns=from_ns, to_ns=to_ns, q=flt.q)
    interval = pick_interval(to_ns - from_ns)

    def terms(field: str, size: int) -> dict[str, Any]:
        return {"terms": {"field": field, "size": size}}

    body: dict[str, Any] = {
        "size": 0,
        "track_total_hits": True,
        "query": windowed.query(),
        "aggs": {
            "by_category": terms("audit.category", 20),
            "by_outcome": terms("audit.outcome", 10),
            "by_action": terms("event.action", top),
            "by_service": terms("service.name", top),
            "top_actors": terms("user.id", top),
            "top_resources": {
                "terms": {"field": "audit.resource.id", "size": top},
                "aggs": {"type": terms("audit.resource.type", 1)},
            },
            "over_time": {
                "date_histogram": {
                    "field": "@timestamp",
                    "fixed_interval": interval,
                    "min_doc_count": 0,
                    "extended_bounds": {
                        "min": format_ns(from_ns)[:23] + "Z",
                        "max": format_ns(max(from_ns, to_ns - 1))[:23] + "Z",
                    },
                    "format": "strict_date_optional_time",
                }
            },
        },
    }
    window = {"from": format_ns(from_ns), "to": format_ns(to_ns), "interval": interval}
    return body, window


def _buckets(aggs: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [
        {"key": b["key"], "count": b["doc_count"]} for b in aggs.get(name, {}).get("buckets", [])
    ]


def shape_stats(resp: dict[str, Any], window: dict[str, Any]) -> dict[str, Any]:
    """The response body of ``GET /stats`` from the search response."""
    aggs = resp.get("aggregations", {})
    resources = [
        {
            "id": b["key"],
            "type": (b.get("type", {}).get("buckets") or [{"key": None}])[0]["key"],
            "count": b["doc_count"],
        }
        for b in aggs.get("top_resources", {}).get("buckets", [])
    ]
    return {
        "window": window,
        "total": resp.get("hits", {}).get("total", {}).get("value", 0),
        "by_category": _buckets(aggs, "by_category"),
        "by_outcome": _buckets(aggs, "by_outcome"),
        "by_action": _buckets(aggs, "by_action"),
        "by_service": _buckets(aggs, "by_service"),
        "top_actors": _buckets(aggs, "top_actors"),
        "top_resources": resources,
        "over_time": [
            {"start": b["key_as_string"], "count": b["doc_count"]}
            for b in aggs.get("over_time", {}).get("buckets", [])
        ],
    }
