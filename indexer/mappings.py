"""Pieces every index template shares: deployment settings and mapping helpers.

The templates themselves live beside the documents they describe (events in
:mod:`indexer.templates`, dead letters, spans, block records); :mod:`indexer.templates`
lists them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TemplateSettings",
    "index_settings",
    "insert_mapping",
    "leaf_mapping",
    "replica_settings",
    "template_settings_of",
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


_REPLICAS_RANGE = re.compile(r"^[0-9]+-([0-9]+|all)$")


def template_settings_of(config: Any) -> TemplateSettings:
    """The settings of a configuration object with ``shards``, ``replicas`` (a count such
    as ``"1"``, or an auto-expand range such as ``"0-1"`` / ``"1-all"``) and
    ``refresh_interval_s``; defaults for what it lacks. ValueError names a bad key."""
    defaults = TemplateSettings()
    shards = getattr(config, "shards", defaults.number_of_shards)
    replicas = str(getattr(config, "replicas", defaults.auto_expand_replicas)).strip()
    refresh = getattr(config, "refresh_interval_s", defaults.refresh_interval_s)
    if not isinstance(shards, int) or not 1 <= shards <= 1024:
        raise ValueError(f"shards: must be 1..1024, got {shards!r}")
    if not isinstance(refresh, (int, float)) or not refresh > 0:
        raise ValueError(f"refresh_interval_s: must be > 0, got {refresh!r}")
    if _REPLICAS_RANGE.match(replicas):
        return TemplateSettings(
            number_of_shards=shards, auto_expand_replicas=replicas, refresh_interval_s=refresh
        )
    if replicas.isdigit():
        return TemplateSettings(
            number_of_shards=shards,
            number_of_replicas=int(replicas),
            auto_expand_replicas="",
            refresh_interval_s=refresh,
        )
    raise ValueError(
        f"replicas: {replicas!r} is neither a count (1) nor an auto-expand range (0-1, 1-all)"
    )


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
