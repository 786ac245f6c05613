"""What a verify reader process runs: read one slice of a point in time, hash each event.

Kept apart from :mod:`indexer.integrity.leaf_scan` so that a spawned reader imports only
what it uses (``elastic_transport``, ``orjson``, the leaf hash): the ``elasticsearch``
client package loads ``pyarrow`` and its async stack, about 60 MB per process that a
reader never needs.
"""

from __future__ import annotations

import gc
from typing import Any

import orjson
from elastic_transport import HttpHeaders, NodeConfig, TransportError, Urllib3HttpNode

from otel_audit.integrity import IntegrityError
from otel_audit.integrity.canonical import leaf_hash_of_event

__all__ = [
    "KEEP_ALIVE",
    "SEARCH_HEADERS",
    "HashedPage",
    "hash_hits",
    "pit_search_body",
    "scan_slice",
]

HashedPage = tuple[list[str], list[str], list["bytes | str"]]
"""Event ids, their indices, leaf hashes (or why one cannot be hashed)."""

_SEARCH = "/_search"
SEARCH_HEADERS = {"content-type": "application/json", "accept": "application/json"}
_REQUEST_TIMEOUT_S = 300.0
KEEP_ALIVE = "2m"


def hash_hits(hits: list[dict[str, Any]]) -> HashedPage:
    """What the verifier needs of one page of hits (see :data:`HashedPage`)."""
    ids: list[str] = []
    indices: list[str] = []
    hashes: list[bytes | str] = []
    # Equal index names become one object, so a page pickles each name once.
    names: dict[str, str] = {}
    for hit in hits:
        source = hit["_source"]
        ids.append(hit["_id"])
        index = hit["_index"]
        indices.append(names.setdefault(index, index))
        try:
            hashes.append(leaf_hash_of_event(source))
        except IntegrityError as exc:
            hashes.append(str(exc))
    return ids, indices, hashes


def pit_search_body(
    pit: str,
    query: dict[str, Any],
    size: int,
    slice_id: int,
    slices: int,
    after: list[Any] | None,
) -> dict[str, Any]:
    """One page's ``_search`` body: a point-in-time read of slice ``slice_id``, after ``after``."""
    body: dict[str, Any] = {
        "size": size,
        "query": query,
        "pit": {"id": pit, "keep_alive": KEEP_ALIVE},
        "sort": [{"_shard_doc": "asc"}],
        "track_total_hits": False,
    }
    if slices > 1:
        body["slice"] = {"id": slice_id, "max": slices}
    if after is not None:
        body["search_after"] = after
    return body


def scan_slice(
    config: NodeConfig,
    headers: dict[str, str],
    pit: str,
    query: dict[str, Any],
    size: int,
    slice_id: int,
    slices: int,
    out: Any,
) -> None:
    """Worker process: read one slice page by page and put its hashed pages on ``out``."""
    # Each page makes ~100k short-lived containers and nothing here is cyclic: the
    # collector's passes would cost a quarter of the worker's time.
    gc.disable()
    try:
        node = Urllib3HttpNode(config)
        after: list[Any] | None = None
        while True:
            meta, raw = node.perform_request(
                "POST",
                _SEARCH,
                body=orjson.dumps(pit_search_body(pit, query, size, slice_id, slices, after)),
                headers=HttpHeaders(headers),
                request_timeout=_REQUEST_TIMEOUT_S,
            )
            if meta.status >= 300:
                text = bytes(raw[:500]).decode("utf-8", "replace")
                raise TransportError(f"search returned HTTP {meta.status}: {text}")
            hits = orjson.loads(raw).get("hits", {}).get("hits", [])
            if not hits:
                break
            out.put(("page", hash_hits(hits)))
            after = hits[-1]["sort"]
            if len(hits) < size:
                break
        out.put(("done", None))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))
