"""The Elasticsearch state this project owns, and how to wipe it between tests.

One list of names, so the test fixtures and any reset command remove the same things
and never touch indices or templates that belong to someone else on a shared node.
"""

from __future__ import annotations

from elasticsearch import Elasticsearch

from indexer.indices import PROJECT_INDEX_PATTERNS, PROJECT_TEMPLATES

__all__ = [
    "PROJECT_COMPONENT_TEMPLATES",
    "PROJECT_INDEX_PATTERNS",
    "PROJECT_INDEX_TEMPLATES",
    "PROJECT_SNAPSHOT_REPOSITORIES",
    "wipe_project_state",
]

PROJECT_INDEX_TEMPLATES = PROJECT_TEMPLATES
PROJECT_COMPONENT_TEMPLATES = PROJECT_TEMPLATES
PROJECT_SNAPSHOT_REPOSITORIES = "otel-audit*"


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
    es.indices.delete_index_template(name=PROJECT_INDEX_TEMPLATES)
    es.cluster.delete_component_template(name=PROJECT_COMPONENT_TEMPLATES)
    es.indices.delete_template(name=PROJECT_INDEX_TEMPLATES)
    es.snapshot.delete_repository(name=PROJECT_SNAPSHOT_REPOSITORIES)
