"""Errors raised by the integrity primitives.

::

    IntegrityError                 root: anything wrong with integrity data
    +-- ProofError                 a Merkle proof does not verify or is malformed
    +-- CanonicalizationError      a value has no RFC 8785 canonical form
    +-- KeyFormatError             a key file, PEM text or key string is unusable
    +-- CheckpointFormatError      a checkpoint or proof bundle is not well formed

All of them are permanent: retrying the same input gives the same answer.
Verifiers catch ``IntegrityError`` only; hostile input never escapes as another type.
"""

from __future__ import annotations

__all__ = [
    "CanonicalizationError",
    "CheckpointFormatError",
    "IntegrityError",
    "KeyFormatError",
    "ProofError",
]


class IntegrityError(Exception):
    """Root of every error raised by ``otel_audit.integrity``."""


class ProofError(IntegrityError):
    """A Merkle inclusion or consistency proof is malformed or does not verify."""


class CanonicalizationError(IntegrityError):
    """A value is outside the RFC 8785 (I-JSON) domain and has no canonical bytes."""


class KeyFormatError(IntegrityError):
    """A key file, PEM text or encoded key cannot be loaded."""


class CheckpointFormatError(IntegrityError):
    """A checkpoint or inclusion proof bundle does not follow its format."""
