"""Wiping the Elasticsearch state this project owns, between tests.

The names come from :mod:`indexer.indices`, so the fixtures remove exactly what the
project creates and never touch indices or templates of someone else on a shared node.
"""

from __future__ import annotations

from elasticsearch import Elasticsearch

from indexer.indices import (
    PROJECT_INDEX_PATTERNS,
    PROJECT_SNAPSHOT_REPOSITORIES,
    PROJECT_TEMPLATES,
)

__all__ = ["wipe_project_state"]


def wipe_project_state(client: Elasticsearch) -> None:
    """Delete every project-owned index, alias, template and snapshot repository.

    Order matters: index templates go before the component templates they compose,
    which Elasticsearch refuses to delete while in use.
    """
    es = client.options(ignore_status=404, request_timeout=60)
    es.indices.delete(
        index=",".join(PROJECT_INDEX_PATTERNS),
        expand_wildcards="all",
        ignore_unavailable=True,
        allow_no_indices=True,
    )
    es.indices.delete_index_template(name=PROJECT_TEMPLATES)
    es.cluster.delete_component_template(name=PROJECT_TEMPLATES)
    es.indices.delete_template(name=PROJECT_TEMPLATES)
    es.snapshot.delete_repository(name=PROJECT_SNAPSHOT_REPOSITORIES)
