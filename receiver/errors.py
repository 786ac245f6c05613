"""Errors by kind, and their one mapping to OTLP gRPC and HTTP answers.

::

    ReceiverError
    ├── PermanentError       the request itself is bad; retrying cannot help
    │   ├── InvalidRequest   undecodable body, wrong content type -> INVALID_ARGUMENT / 400
    │   └── RequestTooLarge  over max_request_bytes -> 413 / RESOURCE_EXHAUSTED without RetryInfo
    └── RetryableError       try again later (carries retry_after_s)
        ├── Overloaded       in-flight limit reached -> RESOURCE_EXHAUSTED + RetryInfo / 429
        └── Unavailable      store down and spool full, or shutting down
                             -> UNAVAILABLE + RetryInfo / 503

Partial rejection of records is not an error: it is an OK answer with partial_success.
"""

from __future__ import annotations

__all__ = [
    "InvalidRequest",
    "Overloaded",
    "PermanentError",
    "ReceiverError",
    "RequestTooLarge",
    "RetryableError",
    "Unavailable",
]


class ReceiverError(Exception):
    """Root of every error the receiver answers a request with."""


class PermanentError(ReceiverError):
    """The request is bad; the client must not retry it."""


class InvalidRequest(PermanentError):
    """The request could not be decoded or is not an OTLP export request."""


class RequestTooLarge(PermanentError):
    """The request body (after decompression) is over the configured limit."""


class RetryableError(ReceiverError):
    """A transient condition; the client should retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(RetryableError):
    """Too much work in flight: push back instead of growing."""


class Unavailable(RetryableError):
    """Neither Elasticsearch nor the spool can take the data now (or shutting down)."""
