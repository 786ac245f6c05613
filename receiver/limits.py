"""The ``limits:`` section: what one client can make the receiver hold or wait for.

Read by the OTLP servers (:mod:`receiver.otlp.grpc`, :mod:`receiver.otlp.http`) and the
in-flight budget (:mod:`receiver.otlp.inflight`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LimitsConfig"]


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """The ``limits:`` section: what one client can make the receiver hold or wait for."""

    decoded_bytes_per_wire_byte: float = 6.0
    """Budget charged per decompressed body byte before decoding, for the decoded records
    (measured with tracemalloc: 4.75 for 8,000 typical audit events decoded with their
    prepared documents on the native decoder, 3.9 without; the process's peak RSS under a
    burst of large gRPC calls, over its idle RSS, stayed within the budget only from 6 on,
    the message being held once more while it is handed to Python)."""
    http_body_timeout_s: float = 30.0
    """A request body not fully received within this is answered 408 and its connection
    closed (stalled uploads hold no budget past it)."""
    http_idle_timeout_s: float = 60.0
    """An idle HTTP keep-alive connection is closed after this."""
    max_concurrent_grpc_calls: int = 32
    """Authenticated gRPC calls in progress at once; more are refused with
    RESOURCE_EXHAUSTED and a RetryInfo delay before their message is read (the Collector
    retries that). gRPC's own concurrent-call cap is not set: its refusal has no RetryInfo."""
    grpc_message_timeout_s: float = 30.0
    """A gRPC call's request message not fully received within this (counted from the
    call's start) is answered DEADLINE_EXCEEDED and frees its call slot, so calls that
    open and never send their message hold no slot past it."""
    max_concurrent_large_grpc_calls: int = 2
    """Of those, calls whose message is at least ``decode_in_thread_bytes`` held at once;
    more are refused with RESOURCE_EXHAUSTED as soon as their message is read, so the rest
    of ``max_concurrent_grpc_calls`` stays open to small calls during a burst of large ones
    (must be below ``max_concurrent_grpc_calls``)."""
    grpc_window_autotune: bool = False
    """Let gRPC grow each call's HTTP/2 flow-control window (BDP probing): faster single
    calls over long round trips, but gRPC then buffers megabytes of calls that wait for a
    slot or are refused. Off, each holds at most the initial 64 KiB window."""
    grpc_idle_timeout_s: float = 300.0
    """An idle gRPC connection is closed after this (GOAWAY)."""
    inflate_in_thread_bytes: int = 1024 * 1024
    """Compressed bodies at least this large are inflated off the event loop."""
    decode_in_thread_bytes: int = 1024 * 1024
    """Bodies at least this large are decoded in a worker thread, one at a time (the
    native decoder parses without the GIL, but building the records holds it), so a burst
    of large requests does not hold up small ones (0 = always on the event loop)."""

    def validate(self) -> None:
        if self.decoded_bytes_per_wire_byte < 0:
            raise ValueError("decoded_bytes_per_wire_byte: must not be negative")
        if self.max_concurrent_grpc_calls < 1:
            raise ValueError("max_concurrent_grpc_calls: must be at least 1")
        if not 1 <= self.max_concurrent_large_grpc_calls < self.max_concurrent_grpc_calls:
            raise ValueError(
                "max_concurrent_large_grpc_calls: must be at least 1 and below "
                f"max_concurrent_grpc_calls ({self.max_concurrent_grpc_calls}), so that small "
                "calls always find a slot"
            )
        for key in (
            "http_body_timeout_s",
            "http_idle_timeout_s",
            "grpc_idle_timeout_s",
            "grpc_message_timeout_s",
        ):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: must be positive")
