"""Errors raised by the local Elasticsearch manager.

All of them derive from :class:`LocalEsError`, so a caller that only wants a clear
message catches that one type::

    LocalEsError
    ├── LocalEsConfigError      bad URL, heap, timeout or directory
    ├── MissingToolError        java 17+ or mvn missing / too old
    ├── DistributionError       the pinned zip could not be fetched or unpacked
    │   └── ChecksumMismatchError
    ├── PortInUseError          the port answers, but not as a healthy Elasticsearch
    ├── StartError              the node did not become healthy (carries the log tail)
    └── StopError               the node would not go away, or is not ours to stop
"""

from __future__ import annotations

__all__ = [
    "INSTALL_HINT",
    "ChecksumMismatchError",
    "DistributionError",
    "LocalEsConfigError",
    "LocalEsError",
    "MissingToolError",
    "PortInUseError",
    "StartError",
    "StopError",
]

INSTALL_HINT = "on Debian/Ubuntu: apt-get install openjdk-17-jre-headless maven"


class LocalEsError(Exception):
    """Root of every error the local Elasticsearch manager raises."""


class LocalEsConfigError(LocalEsError):
    """A setting (environment variable or flag) has a value that cannot work."""


class MissingToolError(LocalEsError):
    """A required program (java 17+, mvn) is missing or too old."""


class DistributionError(LocalEsError):
    """The pinned Elasticsearch distribution could not be fetched or unpacked."""


class ChecksumMismatchError(DistributionError):
    """The downloaded archive does not have the pinned SHA-512."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"checksum mismatch for {path}: expected SHA-512 {expected}, got {actual}; "
            "the file was removed, run the command again to download it afresh"
        )
        self.path = path
        self.expected = expected
        self.actual = actual


class PortInUseError(LocalEsError):
    """The port of the URL is taken by something that is not a healthy Elasticsearch."""

    def __init__(self, port: int, detail: str) -> None:
        super().__init__(
            f"port {port} is in use by something that is not a healthy Elasticsearch "
            f"({detail}); stop it or choose another port in OTEL_AUDIT_ES_URL"
        )
        self.port = port


class StartError(LocalEsError):
    """The node did not start or did not become healthy in time."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        full = message if not log_tail else f"{message}\n--- last lines of the log ---\n{log_tail}"
        super().__init__(full)
        self.log_tail = log_tail


class StopError(LocalEsError):
    """The node could not be stopped (or is not one this manager started)."""
