"""The ``console:`` section: the auditor's web console served by the query API.

YAML example (a section of the ``otel-audit serve`` / ``otel-audit query-api`` config;
``OTEL_AUDIT_CONSOLE__ENABLED=false`` and the like override single keys)::

    console:
      enabled: true
      public_keys: [/etc/otel-audit/signing-key.pub.pem]  # what the browser checks proofs with
      max_export_events: 100000
      checkpoint_stale_after_s: 300
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ConsoleConfig", "ConsoleConfigError", "console_config_of"]

_MAX_EXPORT = 10_000_000


class ConsoleConfigError(ValueError):
    """A console config value is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The ``console`` section. Field names equal the YAML keys; units are in the names."""

    enabled: bool = True
    """Serve the console under ``/console/`` on the query API's listener."""
    public_keys: tuple[str, ...] = ()
    """Ed25519 public key files (PEM or base64 raw) or directories of them, offered to the
    browser to check inclusion proofs and checkpoint signatures with. Empty: the browser
    checks only against keys its user pins on the chain page."""
    max_export_events: int = 100_000
    """Most events one CSV/NDJSON export returns (larger: ``otel-audit query --all``)."""
    checkpoint_stale_after_s: float = 300.0
    """The chain page flags a chain whose newest signed checkpoint is older than this
    (heartbeats re-sign an idle chain every ``integrity.heartbeat_interval_s``)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConsoleConfigError` naming the first bad key."""
        if not 1 <= self.max_export_events <= _MAX_EXPORT:
            raise ConsoleConfigError(
                f"console.max_export_events: must be 1..{_MAX_EXPORT}, got {self.max_export_events}"
            )
        if self.checkpoint_stale_after_s <= 0:
            raise ConsoleConfigError(
                "console.checkpoint_stale_after_s: must be > 0, "
                f"got {self.checkpoint_stale_after_s}"
            )
        for i, path in enumerate(self.public_keys):
            if not path:
                raise ConsoleConfigError(f"console.public_keys[{i}]: must not be empty")


def console_config_of(config: Any) -> ConsoleConfig:
    """The ``console`` section of a receiver config; defaults for anything else."""
    sections = getattr(config, "sections", None)
    section = sections.get("console") if sections is not None else None
    return section if isinstance(section, ConsoleConfig) else ConsoleConfig()
