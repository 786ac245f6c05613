"""The in-flight byte budget shared by the gRPC and HTTP servers.

Every request holds its (decompressed) body bytes against one budget while it is read,
decoded and consumed. A request that would take the total over ``max_inflight_bytes`` is
answered Overloaded at once (429 / RESOURCE_EXHAUSTED with RetryInfo) instead of
queueing: the clients' queues are where waiting data belongs. Both servers run on one
event loop, so the budget needs no lock.

A request is charged its wire bytes as they arrive, its decompressed bytes while it is
inflated, and then ``limits.decoded_bytes_per_wire_byte`` times its decompressed size
*before* it is decoded: the decoded records take several times the bytes they came in,
and charging only the body let concurrent large requests push the process far past the
budget. A gRPC message is charged once it has been read whole; the messages gRPC can hold
at once are bounded by the call slots (``limits.max_concurrent_grpc_calls``), which a call
takes before its message is read (past them: RESOURCE_EXHAUSTED with RetryInfo).
"""

from __future__ import annotations

from types import TracebackType

from receiver.errors import Overloaded
from receiver.metrics import INFLIGHT_BYTES

__all__ = ["ByteBudget", "Reservation"]


class ByteBudget:
    """A non-blocking counting budget of bytes."""

    def __init__(self, limit_bytes: int, retry_after_s: float = 1.0) -> None:
        self.limit_bytes = limit_bytes
        self.retry_after_s = retry_after_s
        self.used_bytes = 0

    def reserve(self) -> Reservation:
        """A reservation that grows with :meth:`Reservation.add` and frees all on exit."""
        return Reservation(self)

    def _take(self, n: int) -> None:
        if self.used_bytes + n > self.limit_bytes:
            raise Overloaded(
                f"receiver is busy: {self.used_bytes} of {self.limit_bytes} in-flight bytes "
                "in use; retry later",
                self.retry_after_s,
            )
        self.used_bytes += n
        INFLIGHT_BYTES.set(self.used_bytes)

    def _give(self, n: int) -> None:
        self.used_bytes -= n
        INFLIGHT_BYTES.set(self.used_bytes)


class Reservation:
    """Bytes one request holds; use as a context manager."""

    __slots__ = ("_budget", "held_bytes")

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.held_bytes = 0

    def add(self, n: int) -> None:
        """Hold ``n`` more bytes, or raise Overloaded (holding nothing more)."""
        self._budget._take(n)
        self.held_bytes += n

    def give(self, n: int) -> None:
        """Give back ``n`` of the bytes held (no longer needed, e.g. a body once inflated)."""
        n = min(n, self.held_bytes)
        if n > 0:
            self._budget._give(n)
            self.held_bytes -= n

    def release(self) -> None:
        """Give back everything held (idempotent)."""
        if self.held_bytes:
            self._budget._give(self.held_bytes)
            self.held_bytes = 0

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
