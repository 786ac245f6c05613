"""The archive's catalog: a signed, hash-chained list of every day ever archived.

Each archived day adds an entry ``catalog/<sequence, 12 digits>.json``::

    {"kind": "archive_catalog", "sequence": n, "day": D, "manifest_sha256": ...,
     "previous_sha256": SHA-256 of entry n-1's bytes ("" for the first), ...signature}

so a verifier holding only the store and the public key sees a day whose manifest and
files were all removed (its entry remains), an entry removed from the middle (the chain
breaks) and a manifest replaced by another one, even validly signed (its hash differs
from the newest entry of its day). Removing the newest entries together with their days
cuts the tail off unseen, as with any log: the sealed ``audit_log.archive`` events in
Elasticsearch name every archived day too. Entries are written by the one lifecycle
runner holding the lease; rewriting a damaged day's archive appends a new entry for it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from indexer.lifecycle.signed import SignedRecordError, parse_record, sign_record, verify_record
from indexer.lifecycle.store import ColdStore
from otel_audit.integrity import Ed25519PrivateKey, Keyring

__all__ = ["CatalogCheck", "append_entry", "check_catalog"]

_NAME = re.compile(r"^catalog/(\d{12})\.json$")
KIND = "archive_catalog"


def _entries(store: ColdStore) -> Iterator[tuple[int, str]]:
    for key in store.list("catalog"):
        m = _NAME.match(key)
        if m:
            yield int(m.group(1)), key


def _key(sequence: int) -> str:
    return f"catalog/{sequence:012d}.json"


def append_entry(
    store: ColdStore, key: Ed25519PrivateKey, day: str, manifest_sha256: str, now_ms: int
) -> None:
    """Add ``day``'s manifest to the catalog unless its newest entry already names it."""
    entries = sorted(_entries(store))
    previous = ""
    if entries:
        last_seq, last_key = entries[-1]
        raw = store.get_bytes(last_key) or b""
        previous = hashlib.sha256(raw).hexdigest()
        for _seq, k in reversed(entries):
            try:
                entry = parse_record(store.get_bytes(k), k)
            except SignedRecordError:
                continue
            if entry.get("day") == day:
                if entry.get("manifest_sha256") == manifest_sha256:
                    return
                break
        sequence = last_seq + 1
    else:
        sequence = 0
    record = sign_record(
        {
            "kind": KIND,
            "sequence": sequence,
            "day": day,
            "manifest_sha256": manifest_sha256,
            "previous_sha256": previous,
            "recorded_ms": now_ms,
        },
        key,
    )
    store.put_bytes(_key(sequence), orjson.dumps(record, option=orjson.OPT_SORT_KEYS))


@dataclass(slots=True)
class CatalogCheck:
    """What the catalog says, and where it disagrees with the store."""

    days: dict[str, str] = field(default_factory=dict)
    """Day -> the manifest SHA-256 its newest entry names."""
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    """(finding kind, day or "", message)."""


def check_catalog(store: ColdStore, keyring: Keyring) -> CatalogCheck:
    """Read and check the catalog chain (see the module docstring)."""
    out = CatalogCheck()
    previous: bytes | None = None
    expected = 0
    for sequence, key in sorted(_entries(store)):
        raw = store.get_bytes(key) or b""
        try:
            entry: dict[str, Any] = parse_record(raw, key)
            verify_record(entry, keyring, KIND)
        except SignedRecordError as exc:
            kind = exc.kind if exc.kind in ("bad_signature", "unknown_key") else "malformed"
            out.problems.append((kind, "", f"{key}: {exc}"))
            previous, expected = raw, sequence + 1
            continue
        if sequence != expected:
            out.problems.append(
                ("missing", "", f"catalog entries {expected}..{sequence - 1} were removed")
            )
        if entry.get("sequence") != sequence:
            out.problems.append(("misplaced", "", f"{key} holds entry {entry.get('sequence')}"))
        want_previous = hashlib.sha256(previous).hexdigest() if previous is not None else ""
        if previous is not None and entry.get("previous_sha256") != want_previous:
            out.problems.append(
                ("bad_signature", "", f"{key} does not chain to the entry before it")
            )
        out.days[str(entry.get("day"))] = str(entry.get("manifest_sha256"))
        previous, expected = raw, sequence + 1
    return out
