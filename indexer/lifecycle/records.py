"""The lifecycle index in Elasticsearch: the lease, and copies of the signed records.

``audit-lifecycle`` holds the lease document and, for every policy action, a copy of its
signed record (``hot_deleted``, ``purged``) plus ``restored`` markers. The copies let an
online ``verify`` tell a policy deletion from an attack without reading the archive; they
are trusted only through their signatures, so an administrator who deletes them makes
the deleted days show up as missing, never the other way round.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exc

from indexer.indices import LIFECYCLE_INDEX

__all__ = ["ensure_lifecycle_index", "put_record", "read_records"]

_MAPPINGS = {
    "dynamic": False,
    "properties": {
        "kind": {"type": "keyword"},
        "day": {"type": "keyword"},
        "index": {"type": "keyword"},
        "owner": {"type": "keyword"},
        "expires_ms": {"type": "long"},
        "until_ms": {"type": "long"},
        "decided_ms": {"type": "long"},
        "record": {"type": "object", "enabled": False},
    },
}


def ensure_lifecycle_index(es: Elasticsearch) -> None:
    """Create the lifecycle index when missing (one shard, durable per request)."""
    if es.indices.exists(index=LIFECYCLE_INDEX):
        return
    try:
        es.indices.create(
            index=LIFECYCLE_INDEX,
            settings={
                "index": {
                    "number_of_shards": 1,
                    "number_of_replicas": 0,
                    "auto_expand_replicas": "0-1",
                    "translog": {"durability": "request"},
                }
            },
            mappings=_MAPPINGS,
        )
    except es_exc.BadRequestError as exc:
        if "resource_already_exists" not in str(exc):
            raise


def put_record(es: Elasticsearch, doc_id: str, doc: dict[str, Any]) -> None:
    """Write (or replace) a lifecycle document."""
    ensure_lifecycle_index(es)
    es.index(index=LIFECYCLE_INDEX, id=doc_id, document=doc, refresh=True)


def read_records(es: Elasticsearch, kind: str) -> Iterator[dict[str, Any]]:
    """Every lifecycle document of ``kind``."""
    after: list[Any] | None = None
    while True:
        body: dict[str, Any] = {
            "size": 1000,
            "query": {"term": {"kind": kind}},
            "sort": [{"_doc": "asc"}],
        }
        if after is not None:
            body["search_after"] = after
        try:
            hits = es.search(index=LIFECYCLE_INDEX, **body)["hits"]["hits"]
        except es_exc.NotFoundError:
            return
        for hit in hits:
            yield hit["_source"]
        if len(hits) < 1000:
            return
        after = hits[-1]["sort"]
