"""A loopback TCP proxy that injects faults between the receivers and Elasticsearch.

Every connection to ``proxy.url`` is forwarded to one of the upstream nodes (round robin).
The fault is set at any moment with :meth:`FaultProxy.set_fault`:

- ``Fault()``: pass everything through;
- ``latency_s``: each chunk of a response is held back that long (a slow Elasticsearch);
- ``refuse``: open connections are cut and new ones closed at once (a node gone, or a
  flapping one when toggled);
- ``truncate_p``: with that probability a response chunk is cut in half and the
  connection closed after the first half (a half-written response: Elasticsearch may have
  done the work, the client cannot know).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import threading
from dataclasses import dataclass

__all__ = ["Fault", "FaultProxy"]


@dataclass(frozen=True)
class Fault:
    """What the proxy does to the traffic now."""

    latency_s: float = 0.0
    refuse: bool = False
    truncate_p: float = 0.0


@dataclass
class ProxyStats:
    """What the proxy did, for the drill's report."""

    connections: int = 0
    refused: int = 0
    truncated: int = 0


class FaultProxy:
    """The proxy, serving from a daemon thread with its own event loop."""

    def __init__(self, upstreams: list[tuple[str, int]], seed: int = 18) -> None:
        self.upstreams = upstreams
        self.fault = Fault()
        self.stats = ProxyStats()
        self._rnd = random.Random(seed)
        self._next = itertools.cycle(range(len(upstreams)))
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="fault-proxy", daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or self._server is None:
            raise RuntimeError("the fault proxy did not start")
        self.port: int = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: what the receivers use as their Elasticsearch."""
        return f"http://127.0.0.1:{self.port}"

    def set_fault(self, fault: Fault) -> None:
        """Switch to ``fault``; a refusing fault also cuts every open connection."""
        self.fault = fault
        if fault.refuse:
            self._loop.call_soon_threadsafe(self._cut_all)

    def close(self) -> None:
        """Stop serving and cut every connection."""

        async def shutdown() -> None:
            self._cut_all()
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    # -- inside the proxy's thread ----------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

        try:
            self._loop.run_until_complete(start())
        finally:
            ready.set()
        self._loop.run_forever()
        self._loop.close()

    def _cut_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        if self.fault.refuse:
            self.stats.refused += 1
            writer.transport.abort()
            return
        host, port = self.upstreams[next(self._next)]
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, response=False),
                self._pump(up_reader, writer, response=True),
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, response: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                chunk = await src.read(65536)
                if not chunk:
                    break
                fault = self.fault
                if fault.refuse:
                    break
                if response and fault.latency_s:
                    await asyncio.sleep(fault.latency_s)
                if response and fault.truncate_p and self._rnd.random() < fault.truncate_p:
                    self.stats.truncated += 1
                    dst.write(chunk[: max(1, len(chunk) // 2)])
                    # A clean close after the half: the client reads a short response.
                    dst.close()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(dst.wait_closed(), 5)
                    break
                dst.write(chunk)
                await dst.drain()
        # Either side ending ends the connection: both directions are cut.
        dst.transport.abort()
