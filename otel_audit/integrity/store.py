"""The checkpoint store interface: where signed checkpoints live besides Elasticsearch.

A verifier compares the checkpoints here with the block records in Elasticsearch: one
that Elasticsearch no longer has means the newest blocks were cut off; one that differs
means a block was replaced. The receiver's default is a directory
(:class:`indexer.integrity.checkpoint_store.DirectoryCheckpointStore`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from otel_audit.integrity.checkpoint import Checkpoint
from otel_audit.integrity.errors import CheckpointFormatError

__all__ = ["CheckpointStore"]


class CheckpointStore(Protocol):
    """Where signed checkpoints go besides Elasticsearch."""

    def append(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` durably; storing the identical one again is a no-op.

        Raises ``FileExistsError`` when a *different* checkpoint has the same chain and
        sequence: the store never overwrites.
        """
        ...

    def chains(self) -> list[str]:
        """Every chain id with at least one checkpoint."""
        ...

    def read(self, chain_id: str) -> Iterator[Checkpoint | CheckpointFormatError]:
        """The chain's checkpoints in sequence order; unreadable ones as the error."""
        ...

    def latest(self, chain_id: str) -> Checkpoint | None:
        """The chain's checkpoint with the highest sequence, or ``None``."""
        ...
