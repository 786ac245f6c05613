"""Fixtures of the drills: the Collector build and a drill context on the session's cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from indexer.local_es import LocalElasticsearch
from tests.collector.conftest import collector_binary  # noqa: F401
from tests.drill.scenarios import DrillContext, DrillSizes


@pytest.fixture
def drill_context(
    es_cluster: LocalElasticsearch,
    collector_binary: Path,  # noqa: F811
    tmp_path: Path,
) -> Iterator[DrillContext]:
    """A context with small sizes on the session's three-node cluster."""
    es = Elasticsearch(es_cluster.urls, request_timeout=60)
    sizes = DrillSizes(
        rate_per_s=200.0,
        receiver_kills=3,
        collector_kills=1,
        kill_gap_s=(0.5, 1.5),
        proxy_phase_s=6.0,
        settle_s=2.0,
    )
    try:
        yield DrillContext(es_cluster, es, collector_binary, tmp_path, sizes)
    finally:
        es.close()
