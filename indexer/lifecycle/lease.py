"""One lifecycle runner at a time: a lease document in Elasticsearch.

Every receiver may schedule the lifecycle; the one that holds the lease runs it. The
lease is the document ``_id=lease`` of the lifecycle index, ``{owner, expires_ms}``:

- **take**: create it with ``op_type=create`` (a 409 means someone holds it); a lease
  whose ``expires_ms`` has passed (its holder died) is taken over by replacing exactly the
  version that was read (``if_seq_no`` + ``if_primary_term``), so of two receivers racing
  for an expired lease one wins and the other gets a 409;
- **renew**: the holder replaces its own version with a later expiry, between steps;
  a renewal that finds another version has lost the lease and stops the run;
- **release**: the holder deletes its own version.

Times come from the caller's clock (injected in tests); a lease outlives a holder's
clock skew by at most the skew.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exc

from indexer.indices import LIFECYCLE_INDEX
from indexer.lifecycle.records import ensure_lifecycle_index

__all__ = ["Lease", "LeaseLost"]

_ID = "lease"


class LeaseLost(Exception):
    """Another runner holds the lease (or took it over while this one was working)."""


@dataclass(slots=True)
class _Held:
    seq_no: int
    primary_term: int


class Lease:
    """The lifecycle lease of one runner (``owner``) for ``ttl_s`` at a time."""

    def __init__(
        self, es: Elasticsearch, owner: str, ttl_s: float, clock_ms: Callable[[], int]
    ) -> None:
        self.es = es
        self.owner = f"{owner}/{uuid.uuid4().hex[:8]}"
        self.ttl_ms = int(ttl_s * 1000)
        self.clock_ms = clock_ms
        self._held: _Held | None = None
        self.holder: str = ""
        """Who held it when :meth:`acquire` failed."""
        self.holder_expires_ms = 0

    def _doc(self) -> dict[str, Any]:
        return {"kind": "lease", "owner": self.owner, "expires_ms": self.clock_ms() + self.ttl_ms}

    def acquire(self) -> bool:
        """Take the lease; False when another live runner holds it."""
        ensure_lifecycle_index(self.es)
        try:
            resp = self.es.create(index=LIFECYCLE_INDEX, id=_ID, document=self._doc(), refresh=True)
            self._held = _Held(resp["_seq_no"], resp["_primary_term"])
            return True
        except es_exc.ConflictError:
            pass
        try:
            current = self.es.get(index=LIFECYCLE_INDEX, id=_ID)
        except es_exc.NotFoundError:
            return self.acquire_once_more()
        src = current["_source"]
        self.holder = str(src.get("owner", "?"))
        self.holder_expires_ms = int(src.get("expires_ms", 0))
        if self.holder_expires_ms > self.clock_ms():
            return False
        try:
            resp = self.es.index(
                index=LIFECYCLE_INDEX,
                id=_ID,
                document=self._doc(),
                if_seq_no=current["_seq_no"],
                if_primary_term=current["_primary_term"],
                refresh=True,
            )
        except es_exc.ConflictError:
            return False
        self._held = _Held(resp["_seq_no"], resp["_primary_term"])
        return True

    def acquire_once_more(self) -> bool:
        """The lease was released between our create and get: try the create again."""
        try:
            resp = self.es.create(index=LIFECYCLE_INDEX, id=_ID, document=self._doc(), refresh=True)
        except es_exc.ConflictError:
            return False
        self._held = _Held(resp["_seq_no"], resp["_primary_term"])
        return True

    def renew(self) -> None:
        """Extend the lease; raises :class:`LeaseLost` when it is no longer ours."""
        if self._held is None:
            raise LeaseLost("the lease is not held")
        try:
            resp = self.es.index(
                index=LIFECYCLE_INDEX,
                id=_ID,
                document=self._doc(),
                if_seq_no=self._held.seq_no,
                if_primary_term=self._held.primary_term,
                refresh=True,
            )
        except (es_exc.ConflictError, es_exc.NotFoundError):
            self._held = None
            raise LeaseLost("another runner took over the lifecycle lease") from None
        self._held = _Held(resp["_seq_no"], resp["_primary_term"])

    def release(self) -> None:
        """Give the lease up (only our own version of it)."""
        if self._held is None:
            return
        with contextlib.suppress(es_exc.ConflictError, es_exc.NotFoundError):
            self.es.delete(
                index=LIFECYCLE_INDEX,
                id=_ID,
                if_seq_no=self._held.seq_no,
                if_primary_term=self._held.primary_term,
                refresh=True,
            )
        self._held = None
