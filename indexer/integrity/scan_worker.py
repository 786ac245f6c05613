"""What a verify reader process runs: read one slice of a point in time, hash each event.

Kept apart from :mod:`indexer.integrity.leaf_scan` so that a spawned reader imports only
what it uses (``elastic_transport``, ``orjson``, the leaf hash): the ``elasticsearch``
client package loads ``pyarrow`` and its async stack, about 60 MB per process that a
reader never needs.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

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
    "raw_pit_pages",
    "scan_slice",
]

HashedPage = tuple[list[str], list[str], list["bytes | str"]]
"""Event ids, their indices, leaf hashes (or why one cannot be hashed)."""

T = TypeVar("T")

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


def raw_pit_pages(
    node: Urllib3HttpNode,
    headers: dict[str, str],
    pit: str,
    query: dict[str, Any],
    size: int,
    slice_id: int,
    slices: int,
    parse: Callable[[bytes], tuple[T, int, list[Any] | None]],
    request_timeout_s: float = _REQUEST_TIMEOUT_S,
    error: type[Exception] = TransportError,
) -> Iterator[T]:
    """The pages of slice ``slice_id`` of a point-in-time read over ``node``, each search
    response read as raw bytes and turned into a page by ``parse`` (the page, its hit
    count and the last hit's ``sort`` values). An HTTP error status raises ``error``."""
    after: list[Any] | None = None
    while True:
        meta, raw = node.perform_request(
            "POST",
            _SEARCH,
            body=orjson.dumps(pit_search_body(pit, query, size, slice_id, slices, after)),
            headers=HttpHeaders(headers),
            request_timeout=request_timeout_s,
        )
        if meta.status >= 300:
            text = bytes(raw[:500]).decode("utf-8", "replace")
            raise error(f"search returned HTTP {meta.status}: {text}")
        page, count, after = parse(bytes(raw))
        if not count:
            return
        yield page
        if count < size:
            return


def _hashed(raw: bytes) -> tuple[HashedPage, int, list[Any] | None]:
    hits = orjson.loads(raw).get("hits", {}).get("hits", [])
    return hash_hits(hits), len(hits), hits[-1]["sort"] if hits else None


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
        for page in raw_pit_pages(node, headers, pit, query, size, slice_id, slices, _hashed):
            out.put(("page", page))
        out.put(("done", None))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))
