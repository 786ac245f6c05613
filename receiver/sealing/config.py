"""The ``integrity:`` section of the receiver configuration (the sealer's settings).

Example::

    integrity:
      enabled: true
      key_file: /etc/otel-audit/signing-key.pem   # or OTEL_AUDIT_SIGNING_KEY in the env
      state_dir: /var/lib/otel-audit/integrity
      checkpoint_dir: /mnt/audit-checkpoints      # outside Elasticsearch's reach
      block_max_events: 5000
      block_max_interval_ms: 1000
      heartbeat_interval_s: 60
      lease_ttl_s: 30                             # one live sealer per chain id
      stuck_after_s: 60                           # /readyz: sealing is stuck after this

Every key can be overridden by ``OTEL_AUDIT_INTEGRITY__<KEY>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from otel_audit.integrity import PRIVATE_KEY_ENV

__all__ = ["IntegrityConfig"]

_CHAIN_RE = re.compile(r"[A-Za-z0-9._:-]{1,200}")


@dataclass(frozen=True, slots=True)
class IntegrityConfig:
    """How stored events are sealed into signed blocks; one comment per field."""

    enabled: bool = True
    """Seal stored events. Off only for benchmarks of the bare write path."""
    key_file: str = ""
    """Ed25519 private key file (PEM or base64 raw seed); empty: use ``key_env``."""
    key_env: str = PRIVATE_KEY_ENV
    """Environment variable holding the private key when ``key_file`` is empty."""
    generate_dev_key: bool = True
    """With neither key configured, generate one into ``state_dir/keys`` (logged loudly as
    a development key). Set false in production so a missing key stops the receiver."""
    state_dir: str = ""
    """Local directory for the chain state, the unsealed-event journal and the chain id;
    empty: ``integrity-state`` beside the spool directory."""
    checkpoint_dir: str = ""
    """Where checkpoints are also written: a directory (default ``state_dir/checkpoints``)
    or ``package.module:factory=ARG`` for another store."""
    chain_id: str = ""
    """This receiver's chain id; empty: generated once and kept in ``state_dir/chain_id``."""
    block_max_events: int = 5000
    """Events per block at most."""
    block_max_interval_ms: int = 1000
    """Longest an event waits before its block is sealed."""
    heartbeat_interval_s: float = 60.0
    """When idle this long, sign a heartbeat checkpoint (same tree size, new time)."""
    lease_ttl_s: float = 30.0
    """The chain's lease in Elasticsearch (one live sealer per chain id) lasts this long
    without a renewal (renewed every third of it); a receiver that died without releasing
    it blocks another receiver of the same chain id, on another state directory, this long."""
    sweep_interval_s: float = 1.0
    """How often the sweeper retries stored events whose hand-off to the sealer failed."""
    stuck_after_s: float = 60.0
    """Sealing counts as stuck (``/readyz``, metrics) when a stored event waited this long
    unsealed (and at least twice ``block_max_interval_ms``), or the chain could not be
    resumed for this long."""

    def validate(self) -> None:
        """Range checks; raise ValueError naming the key."""
        if self.block_max_events < 1:
            raise ValueError("block_max_events: must be at least 1")
        if self.block_max_interval_ms < 1:
            raise ValueError("block_max_interval_ms: must be at least 1")
        if self.heartbeat_interval_s <= 0:
            raise ValueError("heartbeat_interval_s: must be > 0")
        if self.lease_ttl_s < 1:
            raise ValueError("lease_ttl_s: must be at least 1")
        if self.sweep_interval_s <= 0:
            raise ValueError("sweep_interval_s: must be > 0")
        if self.stuck_after_s <= 0:
            raise ValueError("stuck_after_s: must be > 0")
        if self.chain_id and not _CHAIN_RE.fullmatch(self.chain_id):
            raise ValueError(
                f"chain_id: {self.chain_id!r} must be 1-200 of letters, digits and . _ : -"
            )
