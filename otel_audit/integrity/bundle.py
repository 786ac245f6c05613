"""Offline inclusion proof bundles: one event, its audit path and a signed checkpoint.

A bundle lets anyone holding the public key check, without Elasticsearch, that an event
document is exactly the one sealed at ``leaf_index`` of a chain. JSON form::

    {
      "format": "otel-audit.inclusion-proof.v1",
      "event": { ...stored event document... },
      "leaf_index": 12345,
      "tree_size": 1048576,
      "leaf_hash": "base64 (optional: the leaf hash the proof was made for)",
      "audit_path": ["base64", ...],
      "checkpoint": { ...signed checkpoint, see checkpoint.py... }
    }

``tree_size`` must equal the checkpoint's. ``leaf_hash``, when present, lets the
verifier tell "the event was modified after sealing" (the proof still holds for the
recorded hash) from "the proof is wrong". :func:`verify_bundle` never raises: it returns
a :class:`BundleVerification` whose ``reasons`` say every check that failed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otel_audit.integrity.canonical import leaf_hash_of_document
from otel_audit.integrity.checkpoint import (
    Checkpoint,
    CheckpointStatus,
    decode_hash,
    encode_hash,
    verify_checkpoint,
)
from otel_audit.integrity.errors import CheckpointFormatError, IntegrityError, ProofError
from otel_audit.integrity.keys import Keyring
from otel_audit.integrity.merkle import MAX_TREE_SIZE, verify_inclusion

__all__ = [
    "BUNDLE_FORMAT",
    "BundleVerification",
    "ProofBundle",
    "Reason",
    "ReasonCode",
    "load_bundle_json",
    "make_bundle",
    "verify_bundle",
]

BUNDLE_FORMAT = "otel-audit.inclusion-proof.v1"
"""Value of a bundle's ``format`` field."""

_REQUIRED = frozenset(("format", "event", "leaf_index", "tree_size", "audit_path", "checkpoint"))
_OPTIONAL = frozenset(("leaf_hash",))
_MAX_PATH = 64


class ReasonCode:
    """Stable machine-readable codes of :class:`Reason` (strings, for JSON output)."""

    MALFORMED = "malformed_bundle"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    ORIGIN_MISMATCH = "origin_mismatch"
    SIZE_MISMATCH = "size_mismatch"
    EVENT_NOT_CANONICAL = "event_not_canonical"
    EVENT_MODIFIED = "event_modified"
    INCLUSION_FAILED = "inclusion_failed"


@dataclass(frozen=True, slots=True)
class Reason:
    """One failed check: a stable ``code`` and a message for people."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ProofBundle:
    """A parsed inclusion proof bundle (see the module docstring for the JSON form)."""

    event: dict[str, Any]
    leaf_index: int
    tree_size: int
    audit_path: tuple[bytes, ...]
    checkpoint: Checkpoint
    leaf_hash: bytes | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "event": self.event,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "audit_path": [encode_hash(h) for h in self.audit_path],
            "checkpoint": self.checkpoint.to_json_dict(),
        }
        if self.leaf_hash is not None:
            out["leaf_hash"] = encode_hash(self.leaf_hash)
        return out

    @classmethod
    def from_json_dict(cls, data: object) -> ProofBundle:
        """Parse strictly; raises :class:`CheckpointFormatError` naming the bad field."""
        if not isinstance(data, Mapping):
            raise CheckpointFormatError(f"bundle must be an object, got {type(data).__name__}")
        keys = set(data)
        if not keys >= _REQUIRED or not keys <= _REQUIRED | _OPTIONAL:
            missing = sorted(_REQUIRED - keys)
            extra = sorted(str(k) for k in keys - _REQUIRED - _OPTIONAL)
            raise CheckpointFormatError(
                f"bundle fields wrong: missing {missing or 'none'}, unexpected {extra or 'none'}"
            )
        if data["format"] != BUNDLE_FORMAT:
            raise CheckpointFormatError(
                f"bundle format {data['format']!r} is not {BUNDLE_FORMAT!r}"
            )
        event = data["event"]
        if not isinstance(event, dict):
            raise CheckpointFormatError("event must be an object")
        index, size = data["leaf_index"], data["tree_size"]
        for name, value in (("leaf_index", index), ("tree_size", size)):
            if type(value) is not int or not 0 <= value <= MAX_TREE_SIZE:
                raise CheckpointFormatError(f"{name} must be an integer in 0..2**64-1")
        path = data["audit_path"]
        if not isinstance(path, list) or len(path) > _MAX_PATH:
            raise CheckpointFormatError(f"audit_path must be a list of at most {_MAX_PATH} hashes")
        # Present means it must be a hash: null is not a way to say "absent".
        leaf = decode_hash(data["leaf_hash"], "leaf_hash") if "leaf_hash" in data else None
        return cls(
            event=event,
            leaf_index=index,
            tree_size=size,
            audit_path=tuple(decode_hash(h, f"audit_path[{i}]") for i, h in enumerate(path)),
            checkpoint=Checkpoint.from_json_dict(data["checkpoint"]),
            leaf_hash=leaf,
        )


def make_bundle(
    event: Mapping[str, Any],
    leaf_index: int,
    audit_path: Sequence[bytes],
    checkpoint: Checkpoint,
    *,
    leaf_hash: bytes | None = None,
) -> ProofBundle:
    """Assemble a bundle for ``event`` at ``leaf_index`` under a signed ``checkpoint``.

    ``leaf_hash`` defaults to the hash of ``event`` as given now.
    """
    return ProofBundle(
        event=dict(event),
        leaf_index=leaf_index,
        tree_size=checkpoint.tree_size,
        audit_path=tuple(audit_path),
        checkpoint=checkpoint,
        leaf_hash=leaf_hash_of_document(event) if leaf_hash is None else leaf_hash,
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def load_bundle_json(data: bytes | str) -> dict[str, Any]:
    """Parse bundle JSON strictly: no duplicate keys, no NaN/Infinity.

    Duplicate keys would let two parsers see two different events under one proof.
    Raises :class:`CheckpointFormatError`.
    """
    try:
        parsed = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise CheckpointFormatError(f"bundle is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise CheckpointFormatError("bundle must be a JSON object")
    return parsed


@dataclass(frozen=True, slots=True)
class BundleVerification:
    """Result of :func:`verify_bundle`: ``ok`` only when ``reasons`` is empty."""

    ok: bool
    reasons: tuple[Reason, ...]
    checkpoint_status: CheckpointStatus | None = None
    origin: str | None = None
    key_id: str | None = None
    leaf_index: int | None = None
    tree_size: int | None = None
    event_id: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict for ``--json`` output."""
        return {
            "ok": self.ok,
            "reasons": [{"code": r.code, "message": r.message} for r in self.reasons],
            "checkpoint_status": None
            if self.checkpoint_status is None
            else str(self.checkpoint_status),
            "origin": self.origin,
            "key_id": self.key_id,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "event_id": self.event_id,
        }


def _event_id(event: Mapping[str, Any]) -> str | None:
    ev = event.get("event")
    if isinstance(ev, Mapping) and isinstance(ev.get("id"), str):
        return str(ev["id"])
    return None


def verify_bundle(
    bundle: Mapping[str, Any] | ProofBundle, keyring: Keyring, *, origin: str | None = None
) -> BundleVerification:
    """Check a bundle offline: signature, sizes, event hash and audit path.

    Runs every check it can and reports each failure, so one answer tells the whole
    story (e.g. a modified event under a valid signature). ``origin``, when given,
    must match the checkpoint's. Never raises.
    """
    if isinstance(bundle, ProofBundle):
        parsed = bundle
    else:
        try:
            parsed = ProofBundle.from_json_dict(bundle)
        except IntegrityError as exc:
            return BundleVerification(False, (Reason(ReasonCode.MALFORMED, str(exc)),))

    cp = parsed.checkpoint
    reasons: list[Reason] = []
    status = verify_checkpoint(cp, keyring)
    if status is CheckpointStatus.UNKNOWN_KEY:
        reasons.append(
            Reason(
                ReasonCode.UNKNOWN_KEY, f"checkpoint signed by key {cp.key_id}, not in the keyring"
            )
        )
    elif status is CheckpointStatus.BAD_SIGNATURE:
        reasons.append(
            Reason(
                ReasonCode.BAD_SIGNATURE,
                f"checkpoint signature does not verify with key {cp.key_id}",
            )
        )
    if origin is not None and cp.origin != origin:
        reasons.append(
            Reason(
                ReasonCode.ORIGIN_MISMATCH, f"checkpoint is for chain {cp.origin!r}, not {origin!r}"
            )
        )
    if parsed.tree_size != cp.tree_size:
        reasons.append(
            Reason(
                ReasonCode.SIZE_MISMATCH,
                f"bundle tree_size {parsed.tree_size} differs from checkpoint {cp.tree_size}",
            )
        )

    computed: bytes | None
    try:
        computed = leaf_hash_of_document(parsed.event)
    except IntegrityError as exc:
        computed = None
        reasons.append(Reason(ReasonCode.EVENT_NOT_CANONICAL, str(exc)))

    def _path_error(leaf: bytes) -> str | None:
        try:
            verify_inclusion(leaf, parsed.leaf_index, cp.tree_size, parsed.audit_path, cp.root_hash)
        except ProofError as exc:
            return str(exc)
        return None

    if computed is not None and parsed.leaf_hash is not None and computed != parsed.leaf_hash:
        recorded_error = _path_error(parsed.leaf_hash)
        note = (
            "; the proof holds for the recorded hash, so the event changed after sealing"
            if recorded_error is None
            else ""
        )
        reasons.append(
            Reason(
                ReasonCode.EVENT_MODIFIED,
                "event document does not hash to the leaf the proof was made for" + note,
            )
        )
        if recorded_error is not None:
            reasons.append(Reason(ReasonCode.INCLUSION_FAILED, recorded_error))
    elif computed is not None:
        error = _path_error(computed)
        if error is not None:
            reasons.append(Reason(ReasonCode.INCLUSION_FAILED, error))

    return BundleVerification(
        ok=not reasons,
        reasons=tuple(reasons),
        checkpoint_status=status,
        origin=cp.origin,
        key_id=cp.key_id,
        leaf_index=parsed.leaf_index,
        tree_size=cp.tree_size,
        event_id=_event_id(parsed.event),
    )
