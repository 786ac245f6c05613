"""One live sealer per chain: a lease document in Elasticsearch.

Two receivers configured with the same chain id would each sign their own sequence 0, 1,
2 ... and fork the chain. The state directory's lock only catches two on one host, so the
sealer also holds a lease: the document ``_id=<chain id>`` of ``audit-chain-leases``,
``{chain_id, holder, state_id, host, pid, heartbeat_ms, expires_ms}``.

- **take** (before the first block of a run): create it with ``op_type=create``. A 409
  means someone holds it: refused while its ``expires_ms`` is in the future, unless its
  ``state_id`` is this state directory's own (the previous run of this very receiver,
  killed: the directory's flock proves it is gone). An expired or own lease is taken over
  by replacing exactly the version read (``if_seq_no`` + ``if_primary_term``), so of two
  racers one wins and the other gets a 409.
- **renew**: every third of the TTL, replacing its own version; a renewal that finds
  another version (or none) has lost the lease, and the sealer stops sealing.
- **release**: on a clean shutdown, delete the own version.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from elasticsearch import AsyncElasticsearch
from elasticsearch import exceptions as es_exc

from indexer.indices import CHAIN_LEASES_INDEX

__all__ = ["ChainInUse", "ChainLease"]

_MAPPINGS = {
    "dynamic": "strict",
    "properties": {
        "chain_id": {"type": "keyword"},
        "holder": {"type": "keyword"},
        "state_id": {"type": "keyword"},
        "host": {"type": "keyword"},
        "pid": {"type": "long"},
        "heartbeat_ms": {"type": "date", "format": "epoch_millis"},
        "expires_ms": {"type": "date", "format": "epoch_millis"},
    },
}


class ChainInUse(RuntimeError):
    """Another live receiver seals this chain (or took the lease over from this one)."""


class ChainLease:
    """The lease on one chain for one sealer run; ``ttl_s`` without a renewal ends it."""

    def __init__(
        self,
        es: AsyncElasticsearch,
        chain_id: str,
        state_id: str,
        ttl_s: float,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self._es = es
        self.chain_id = chain_id
        self.state_id = state_id
        self.holder = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.ttl_ms = int(ttl_s * 1000)
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._held: tuple[int, int] | None = None

    @property
    def held(self) -> bool:
        """This run holds the lease (as of its last take or renewal)."""
        return self._held is not None

    def _doc(self) -> dict[str, Any]:
        now = self._clock_ms()
        return {
            "chain_id": self.chain_id,
            "holder": self.holder,
            "state_id": self.state_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "heartbeat_ms": now,
            "expires_ms": now + self.ttl_ms,
        }

    async def _ensure_index(self) -> None:
        if await self._es.indices.exists(index=CHAIN_LEASES_INDEX):
            return
        try:
            await self._es.indices.create(
                index=CHAIN_LEASES_INDEX,
                settings={
                    "index": {
                        "number_of_shards": 1,
                        "auto_expand_replicas": "0-1",
                        "translog": {"durability": "request"},
                    }
                },
                mappings=_MAPPINGS,
            )
        except es_exc.BadRequestError as exc:
            if "resource_already_exists" not in str(exc):
                raise

    async def acquire(self) -> None:
        """Take the lease, or raise :class:`ChainInUse` naming the live holder."""
        await self._ensure_index()
        for _ in range(3):
            try:
                resp = await self._es.create(
                    index=CHAIN_LEASES_INDEX, id=self.chain_id, document=self._doc(), refresh=True
                )
                self._held = (resp["_seq_no"], resp["_primary_term"])
                return
            except es_exc.ConflictError:
                pass
            try:
                current = await self._es.get(index=CHAIN_LEASES_INDEX, id=self.chain_id)
            except es_exc.NotFoundError:
                continue  # released between the create and the get
            src = current["_source"]
            expires = int(src.get("expires_ms", 0))
            own = src.get("state_id") == self.state_id
            if expires > self._clock_ms() and not own:
                raise ChainInUse(
                    f"chain {self.chain_id!r} is sealed by another live receiver "
                    f"({src.get('holder')}, host {src.get('host')}, pid {src.get('pid')}; "
                    f"its lease in {CHAIN_LEASES_INDEX} runs until {expires} ms): two "
                    "receivers must not share a chain id. Give each its own "
                    "integrity.chain_id (or stop the other one); an abandoned lease "
                    f"expires after integrity.lease_ttl_s ({self.ttl_ms / 1000:g} s)"
                )
            try:
                resp = await self._es.index(
                    index=CHAIN_LEASES_INDEX,
                    id=self.chain_id,
                    document=self._doc(),
                    if_seq_no=current["_seq_no"],
                    if_primary_term=current["_primary_term"],
                    refresh=True,
                )
            except es_exc.ConflictError:
                continue  # someone else moved it first: look again
            self._held = (resp["_seq_no"], resp["_primary_term"])
            return
        raise ChainInUse(f"the lease on chain {self.chain_id!r} keeps changing hands")

    async def renew(self) -> None:
        """Extend the lease; raises :class:`ChainInUse` when it is no longer ours."""
        if self._held is None:
            raise ChainInUse(f"the lease on chain {self.chain_id!r} is not held")
        seq_no, term = self._held
        try:
            resp = await self._es.index(
                index=CHAIN_LEASES_INDEX,
                id=self.chain_id,
                document=self._doc(),
                if_seq_no=seq_no,
                if_primary_term=term,
                refresh=True,
            )
        except (es_exc.ConflictError, es_exc.NotFoundError):
            self._held = None
            raise ChainInUse(
                f"another receiver took over the lease on chain {self.chain_id!r}; this "
                "one stops sealing (its stored events stay journaled)"
            ) from None
        self._held = (resp["_seq_no"], resp["_primary_term"])

    async def release(self) -> None:
        """Give the lease up (only this run's version of it)."""
        if self._held is None:
            return
        seq_no, term = self._held
        self._held = None
        with contextlib.suppress(es_exc.ConflictError, es_exc.NotFoundError):
            await self._es.delete(
                index=CHAIN_LEASES_INDEX,
                id=self.chain_id,
                if_seq_no=seq_no,
                if_primary_term=term,
                refresh=True,
            )
