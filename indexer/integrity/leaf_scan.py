"""Read every event of a point in time and hash it, in worker processes.

The verifier's cost per event is parsing the stored JSON and hashing its canonical form.
In one process that work shares the interpreter lock with the threads reading pages, so
it is done where the pages are read: each worker process reads one slice of the point in
time as raw bytes, parses and hashes each event and sends only what the comparison needs
(event id, index, leaf hash) to the parent; no field of a stored event is read for
anything but its hash. The parent compares the
hashes with the sealed ones and classifies; nothing is decided in the workers.

A client whose connection cannot be handed to another process (a custom SSL context)
falls back to reading in threads and hashing in the parent, with the same results.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import queue
import threading
from collections.abc import Iterator
from typing import Any

from elastic_transport import NodeConfig, TransportError
from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exc

from indexer.integrity.scan_worker import (
    KEEP_ALIVE,
    SEARCH_HEADERS,
    HashedPage,
    hash_hits,
    pit_search_body,
    raw_pit_pages,
    scan_slice,
)

__all__ = [
    "PIT_FILTER_PATH",
    "HashedPage",
    "LeafScan",
    "hash_hits",
    "pit_pages",
    "pit_search_body",
    "raw_pit_pages",
    "worker_connection",
]


PIT_FILTER_PATH = "hits.hits._index,hits.hits._id,hits.hits._source,hits.hits.sort"
# Worker processes parse whole pages in C anyway; without ``filter_path`` Elasticsearch
# copies each stored source into the response instead of re-parsing it through the
# filter (about a fifth more events per second from the same node).


def pit_pages(
    es: Elasticsearch,
    pit: str,
    query: dict[str, Any],
    size: int,
    slice_id: int = 0,
    slices: int = 1,
) -> Iterator[list[dict[str, Any]]]:
    """The hits of slice ``slice_id`` of a point-in-time read, page by page, in order."""
    after: list[Any] | None = None
    while True:
        resp = es.perform_request(
            "POST",
            "/_search",
            params={"filter_path": PIT_FILTER_PATH},
            headers=SEARCH_HEADERS,
            body=pit_search_body(pit, query, size, slice_id, slices, after),
        ).body
        hits = resp.get("hits", {}).get("hits", [])
        if not hits:
            return
        yield hits
        if len(hits) < size:
            return
        after = hits[-1]["sort"]


def worker_connection(es: Elasticsearch) -> tuple[list[NodeConfig], dict[str, str]] | None:
    """Node configurations and headers (authentication included) a worker process or
    thread can use, or None (a custom SSL context cannot cross a process boundary)."""
    configs = [node.config for node in es.transport.node_pool.all()]
    if not configs:
        return None
    headers = dict(SEARCH_HEADERS)
    headers.update(configs[0].headers)
    # Client-level headers carry authentication (basic auth, API key, bearer token).
    headers.update(getattr(es, "_headers", None) or {})
    try:
        pickle.dumps((configs, headers))
    except Exception:
        return None
    return configs, headers


class LeafScan:
    """Every hit of a query as hashed pages, read ahead of the consumer.

    Entering opens a point in time (so the events are a snapshot taken before the caller
    reads anything else) and starts reading it in ``slices`` slices, each by its own
    worker process when ``processes`` is true and the client's connection can be handed
    over, else by threads of this process. :meth:`pages` yields :data:`HashedPage` in no
    particular order; leaving stops the readers and closes the point in time.
    """

    def __init__(
        self,
        es: Elasticsearch,
        index: str,
        query: dict[str, Any],
        size: int,
        slices: int = 2,
        *,
        processes: bool = True,
    ) -> None:
        self._es = es
        self._index = index
        self._query = query
        self._size = size
        self._slices = max(1, slices)
        self._processes = processes
        self._pit: str | None = None
        self._procs: list[Any] = []
        self._out: Any = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._tq: queue.Queue[list[dict[str, Any]] | BaseException | None] = queue.Queue(
            maxsize=4 * self._slices
        )

    def __enter__(self) -> LeafScan:
        try:
            self._pit = self._es.open_point_in_time(
                index=self._index, keep_alive=KEEP_ALIVE, ignore_unavailable=True
            )["id"]
        except es_exc.NotFoundError:
            return self
        try:
            connection = worker_connection(self._es) if self._processes else None
            if connection is None:
                self._start_threads()
            else:
                self._start_processes(*connection)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(5)
        if self._out is not None:
            self._out.close()
            self._out.cancel_join_thread()
        for t in self._threads:
            while t.is_alive():
                try:
                    self._tq.get_nowait()
                except queue.Empty:
                    t.join(0.05)
        if self._pit is not None:
            # The PIT expires on its own if this fails.
            with contextlib.suppress(Exception):
                self._es.close_point_in_time(id=self._pit)
            self._pit = None

    def _start_processes(self, configs: list[NodeConfig], headers: dict[str, str]) -> None:
        # Spawned, not forked: the parent's client holds open sockets and maybe threads.
        ctx = multiprocessing.get_context("spawn")
        # Deep enough that the readers keep going while the caller checks the blocks.
        self._out = ctx.Queue(maxsize=16 * self._slices)
        for i in range(self._slices):
            p = ctx.Process(
                target=scan_slice,
                args=(
                    configs[i % len(configs)],
                    headers,
                    self._pit,
                    self._query,
                    self._size,
                    i,
                    self._slices,
                    self._out,
                ),
                name=f"verify-scan-{i}",
                daemon=True,
            )
            p.start()
            self._procs.append(p)

    def _start_threads(self) -> None:
        pit = self._pit
        assert pit is not None

        def fetch(slice_id: int) -> None:
            try:
                for hits in pit_pages(
                    self._es, pit, self._query, self._size, slice_id, self._slices
                ):
                    if self._stop.is_set():
                        break
                    self._tq.put(hits)
                self._tq.put(None)
            except BaseException as exc:
                self._tq.put(exc)

        for i in range(self._slices):
            t = threading.Thread(target=fetch, args=(i,), name=f"verify-scan-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def pages(self) -> Iterator[HashedPage]:
        """The hashed pages, as the readers deliver them."""
        if self._procs:
            yield from self._process_pages()
            return
        done = 0
        while done < len(self._threads):
            item = self._tq.get()
            if item is None:
                done += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield hash_hits(item)

    def _process_pages(self) -> Iterator[HashedPage]:
        done = 0
        while done < len(self._procs):
            try:
                kind, payload = self._out.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in self._procs if p.exitcode not in (None, 0)]
                if dead:
                    raise TransportError(
                        f"event reader {dead[0].name} exited with code {dead[0].exitcode}"
                    ) from None
                continue
            if kind == "page":
                yield payload
            elif kind == "done":
                done += 1
            else:
                raise TransportError(f"reading events failed: {payload}")
