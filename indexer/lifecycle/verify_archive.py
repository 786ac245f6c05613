"""Verify and the lifecycle: archived days verified from the archive, policy deletions told
apart from attacks.

- :func:`verify_archive` checks every day of a cold store with nothing but the store and
  the public keys (``otel-audit verify --archive URL``, no Elasticsearch):
  :func:`indexer.lifecycle.archive.verify_day` for each day.
- :class:`PolicyDeletions` is what ``verify`` against Elasticsearch consults before it
  calls a sealed event missing: the signed ``hot_deleted`` and ``purged`` records (from
  the ``audit-lifecycle`` index, or the archive's own copies) name, per chain, the leaf
  ranges of the events of each index the policy removed. An event whose index was
  deleted without such a record, or whose leaf the record does not cover, stays
  ``missing``: only the signing key can make a deletion look like the policy's.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import Elasticsearch

from indexer.lifecycle.archive import (
    HOT_DELETED,
    PURGED,
    ArchiveFinding,
    DayReport,
    day_key,
    list_days,
    verify_day,
)
from indexer.lifecycle.catalog import check_catalog
from indexer.lifecycle.records import read_records
from indexer.lifecycle.signed import SignedRecordError, parse_record, verify_record
from indexer.lifecycle.store import ColdStore
from otel_audit.integrity import Keyring

__all__ = ["ArchiveReport", "PolicyDeletions", "verify_archive"]


@dataclass(slots=True)
class ArchiveReport:
    """What :func:`verify_archive` found, day by day."""

    store: str
    days: list[DayReport] = field(default_factory=list)
    catalog: list[ArchiveFinding] = field(default_factory=list)
    """Findings of the catalog chain itself."""

    @property
    def ok(self) -> bool:
        """True when no day and no catalog entry has findings."""
        return all(d.ok for d in self.days) and not self.catalog

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        counts: dict[str, int] = {}
        for f in [*self.catalog, *(f for d in self.days for f in d.findings)]:
            counts[f.kind] = counts.get(f.kind, 0) + 1
        return {
            "ok": self.ok,
            "store": self.store,
            "summary": {
                "days": len(self.days),
                "archived": sum(1 for d in self.days if d.state == "archived"),
                "purged": sum(1 for d in self.days if d.state == "purged"),
                "events": sum(d.events for d in self.days if d.state == "archived"),
                "findings": counts,
            },
            "days": [d.to_json_dict() for d in self.days],
            "catalog": [f.to_json_dict() for f in self.catalog],
        }


def verify_archive(
    store: ColdStore,
    keyring: Keyring,
    *,
    days: Iterable[str] | None = None,
    progress: Callable[[DayReport], None] | None = None,
) -> ArchiveReport:
    """Verify every archived day (or ``days``) of ``store``."""
    report = ArchiveReport(store.url)
    catalog = check_catalog(store, keyring)
    present = set(list_days(store))
    wanted = sorted(days) if days is not None else sorted(present | set(catalog.days))
    for day in wanted:
        if day not in present:
            # Catalogued, but its manifest (and so the whole day) is gone from the store.
            result = DayReport(day)
            result.findings.append(
                ArchiveFinding("missing", day, "the catalog names this day; it is gone")
            )
        else:
            result = verify_day(store, day, keyring, expected_manifest_sha256=catalog.days.get(day))
            if day not in catalog.days:
                result.findings.append(
                    ArchiveFinding("inserted", day, "this day is not in the signed catalog")
                )
        report.days.append(result)
        if progress is not None:
            progress(result)
    report.catalog = [
        ArchiveFinding(kind, day or "catalog", message) for kind, day, message in catalog.problems
    ]
    return report


@dataclass(slots=True)
class _Deleted:
    starts: list[int]
    ends: list[int]
    day: str
    kind: str


class PolicyDeletions:
    """Leaf ranges of the events the policy removed from Elasticsearch, by chain and index."""

    def __init__(self) -> None:
        self._by: dict[tuple[str, str], list[_Deleted]] = {}
        self.problems: list[str] = []
        """Records that did not verify (they cover nothing)."""
        self.days: dict[str, str] = {}
        """Day -> ``archived`` or ``purged``, for the report."""

    def add(self, record: Mapping[str, Any]) -> None:
        """Add one verified ``hot_deleted`` or ``purged`` record."""
        index = str(record.get("index", ""))
        kind = str(record.get("kind"))
        day = str(record.get("day", ""))
        for chain, ranges in dict(record.get("leaves", {})).items():
            pairs = sorted((int(a), int(b)) for a, b in ranges)
            self._by.setdefault((str(chain), index), []).append(
                _Deleted([a for a, _ in pairs], [b for _, b in pairs], day, kind)
            )
        if self.days.get(day) != "purged":
            self.days[day] = "purged" if kind == "purged" else "archived"

    def covers(self, chain: str, leaf: int, index: str) -> str | None:
        """``archived <day>`` / ``purged <day>`` when the policy removed this event."""
        for deleted in self._by.get((chain, index), ()):
            i = bisect.bisect_right(deleted.starts, leaf) - 1
            if i >= 0 and leaf < deleted.ends[i]:
                return f"{'purged' if deleted.kind == 'purged' else 'archived'} {deleted.day}"
        return None

    def __bool__(self) -> bool:
        return bool(self._by)

    def _take(self, record: Any, keyring: Keyring, kind: str, where: str) -> None:
        try:
            verify_record(record, keyring, kind)
        except SignedRecordError as exc:
            self.problems.append(f"{where}: {exc}")
            return
        self.add(record)

    @classmethod
    def from_elasticsearch(cls, es: Elasticsearch, keyring: Keyring) -> PolicyDeletions:
        """From the copies in the ``audit-lifecycle`` index."""
        out = cls()
        for kind in ("hot_deleted", "purged"):
            for doc in read_records(es, kind):
                out._take(doc.get("record"), keyring, kind, f"{kind} record of {doc.get('day')}")
        return out

    @classmethod
    def from_store(cls, store: ColdStore, keyring: Keyring) -> PolicyDeletions:
        """From the archive's own records."""
        out = cls()
        for day in list_days(store):
            for name, kind in ((HOT_DELETED, "hot_deleted"), (PURGED, "purged")):
                raw = store.get_bytes(day_key(day, name))
                if raw is None:
                    continue
                try:
                    record = parse_record(raw, f"{day}/{name}")
                except SignedRecordError as exc:
                    out.problems.append(str(exc))
                    continue
                out._take(record, keyring, kind, f"{day}/{name}")
        return out
