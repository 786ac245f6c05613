"""Pieces every index template shares: deployment settings and mapping helpers.

The templates themselves live beside the documents they describe (events in
:mod:`indexer.templates`, dead letters, spans, block records); :mod:`indexer.templates`
lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "TemplateSettings",
    "index_settings",
    "insert_mapping",
    "leaf_mapping",
    "replica_settings",
]


@dataclass(frozen=True, slots=True)
class TemplateSettings:
    """Deployment knobs that belong in index settings, not in the schema."""

    number_of_shards: int = 1
    number_of_replicas: int = 0
    """Fixed replicas, used only when ``auto_expand_replicas`` is empty."""
    auto_expand_replicas: str = "0-1"
    """Replicas follow the data nodes within this range: none on a single node (which
    stays green), one on a cluster, so a lost node loses no acknowledged event."""
    refresh_interval_s: float = 1.0


def replica_settings(settings: TemplateSettings) -> dict[str, Any]:
    """The replica part of an index's settings."""
    if settings.auto_expand_replicas:
        return {"auto_expand_replicas": settings.auto_expand_replicas}
    return {"number_of_replicas": settings.number_of_replicas}


def index_settings(settings: TemplateSettings, *, durability: str = "request") -> dict[str, Any]:
    """The ``index`` settings block of a template: shards, replicas, refresh, translog.

    ``durability="request"`` fsyncs the translog before every write is acknowledged (audit
    evidence); spans, which are context only, use ``async``.
    """
    return {
        "number_of_shards": settings.number_of_shards,
        **replica_settings(settings),
        "refresh_interval": f"{settings.refresh_interval_s:g}s",
        "translog": {"durability": durability},
    }


def leaf_mapping(kind: str, max_bytes: int | None = None) -> dict[str, Any]:
    """The mapping of one schema type."""
    if kind == "keyword":
        return {"type": "keyword", "ignore_above": max_bytes or 1024}
    if kind == "text":
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}}
    if kind == "date_nanos":
        return {"type": "date_nanos"}
    if kind == "ip":
        return {"type": "ip"}
    if kind == "long":
        return {"type": "long"}
    if kind == "flattened":
        return {"type": "flattened", "ignore_above": 1024, "depth_limit": 20}
    raise ValueError(f"schema type {kind!r} has no mapping")


def insert_mapping(props: dict[str, Any], dotted: str, leaf: dict[str, Any]) -> None:
    """Put ``leaf`` at the dotted path of a ``properties`` tree, refusing clashes."""
    parts = dotted.split(".")
    node = props
    for part in parts[:-1]:
        holder = node.setdefault(part, {"properties": {}})
        if "properties" not in holder:
            raise ValueError(f"{dotted}: {part} is both a leaf and an object")
        node = holder["properties"]
    if parts[-1] in node:
        if node[parts[-1]] != leaf:
            raise ValueError(f"{dotted} is mapped twice with different types")
        return
    node[parts[-1]] = leaf
