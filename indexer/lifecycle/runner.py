"""One run of the lifecycle: hot days past their window are archived, verified and removed
from Elasticsearch; archived days past retention are deleted; holds stop both.

::

    take the lease (one runner at a time)          lease.py
    for each hot day older than its hot_days, oldest first:
        archive   export (checked against the seals) -> upload the files -> manifest
                  (signed, last) -> read everything back and verify it        archive.py
        held?     a legal hold touching the day keeps the index               holds.py
        delete    signed hot_deleted record (store + audit-lifecycle) -> audit event
                  -> delete the index and the day's dead letters
    for each archived day older than its retain_days:
        held?     keep
        purge     signed purged record -> audit event -> delete the data files
                  (the manifest and the signed records stay: verify reads them)
    spans: deleted when past spans.retention_days and no event of their day or the next
    is hot (every hot event's trace view keeps working)
    release the lease

Crash safety: every step either leaves what it found or completes something a later run
recognises. Files are whole objects (a partial upload is just a missing object); the
manifest is written only after every file, and nothing is deleted before the archive was
read back and verified in the same run. A policy deletion first writes its signed
record, then its audit event, which is built from that record alone (same id, time and
content), then deletes: a run that resumes after a crash at any point sends at most an
exact duplicate, which the receiver stores once, and finishes the deletion.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exc

from indexer.indices import (
    BLOCKS_INDEX,
    EVENTS_INDEX_PREFIX,
    EVENTS_PATTERN,
    REJECTED_INDEX_PREFIX,
)
from indexer.lifecycle.archive import (
    DATA_FILES,
    EVENTS,
    HOT_DELETED,
    MANIFEST,
    PURGED,
    DayReport,
    FastLeaves,
    day_key,
    day_of_index,
    index_of_day,
    list_days,
    manifest_body,
    read_parquet,
    verify_day,
)
from indexer.lifecycle.audit_events import RecordEvent, lifecycle_event
from indexer.lifecycle.catalog import append_entry
from indexer.lifecycle.config import DayPolicy, LifecycleConfig
from indexer.lifecycle.export import DayNotReady, ExportError, PageReader, export_day
from indexer.lifecycle.holds import Hold, list_holds
from indexer.lifecycle.lease import Lease, LeaseLost
from indexer.lifecycle.records import put_record, read_records
from indexer.lifecycle.signed import SignedRecordError, parse_record, sign_record, verify_record
from indexer.lifecycle.store import ColdStore, ColdStoreError
from otel_audit.integrity import Ed25519PrivateKey, Keyring
from otel_audit.integrity.merkle import FastExtend
from otel_audit.integrity.store import CheckpointStore

__all__ = ["DayAction", "LifecycleRunner", "RunReport", "StepHook"]

_log = logging.getLogger("otel_audit.lifecycle")

StepHook = Callable[[str, str], None]
"""Called with (step, day) after each durable step (tests use it to crash there)."""


@dataclass(slots=True)
class DayAction:
    """What the run did (or, dry, would do) with one day."""

    day: str
    action: str
    """``keep``, ``archive`` (archived, index kept: a hold or restore), ``index_delete``,
    ``held``, ``purge``, ``not_ready``, ``error``; a dry run says what it would do."""
    detail: str = ""
    events: int = 0
    hot_days: int = 0
    retain_days: int = 0
    archive_bytes: int = 0


@dataclass(slots=True)
class RunReport:
    """The outcome of :meth:`LifecycleRunner.run`."""

    started_ms: int
    finished_ms: int = 0
    dry_run: bool = False
    skipped: str = ""
    """Why nothing ran (another runner holds the lease)."""
    days: list[DayAction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    spans_deleted: list[str] = field(default_factory=list)
    archived_days: int = 0
    archived_bytes: int = 0
    oldest_hot_day: str = ""

    @property
    def ok(self) -> bool:
        """True when no day failed."""
        return not self.errors

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready form (``lifecycle run --json``)."""
        out = asdict(self)
        out["ok"] = self.ok
        return out


def _day(text: str) -> date:
    return datetime.strptime(text, "%Y.%m.%d").date()


class LifecycleRunner:
    """Runs the lifecycle once per :meth:`run`; see the module docstring."""

    def __init__(
        self,
        es: Elasticsearch,
        config: LifecycleConfig,
        store: ColdStore,
        *,
        private_key: Ed25519PrivateKey,
        keyring: Keyring,
        checkpoints: CheckpointStore | None,
        record: RecordEvent | None,
        owner: str,
        service_name: str = "otel-audit-lifecycle",
        clock_ms: Callable[[], int] | None = None,
        wall_ms: Callable[[], int] | None = None,
        on_step: StepHook | None = None,
        progress: Callable[[str], None] | None = None,
        spans_retention_days: int = 7,
        workdir: str | None = None,
        fast_extend: FastExtend | None = None,
        read_page: PageReader | None = None,
        fast_leaves: FastLeaves | None = None,
    ) -> None:
        self.es = es
        self.config = config
        self.store = store
        self.key = private_key
        self.keyring = keyring
        self.checkpoints = checkpoints
        self.record = record
        self.owner = owner
        self.service_name = service_name
        self.wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        # The policy's "now" (injected in tests); records and events carry wall time.
        self.clock_ms = clock_ms or self.wall_ms
        self.on_step = on_step or (lambda _step, _day: None)
        self.progress = progress or (lambda _msg: None)
        self.spans_retention_days = spans_retention_days
        self.workdir = workdir
        self.fast_extend = fast_extend
        self.read_page = read_page
        self.fast_leaves = fast_leaves
        self._stop = threading.Event()

    def request_stop(self) -> None:
        """Make a run in progress return after its current step (receiver shutdown)."""
        self._stop.set()

    # -- the run ----------------------------------------------------------------

    def run(self, *, dry_run: bool = False) -> RunReport:
        """Run every due step once (nothing is changed with ``dry_run``)."""
        report = RunReport(started_ms=self.clock_ms(), dry_run=dry_run)
        lease = Lease(self.es, self.owner, self.config.lease_ttl_s, self.clock_ms)
        if not dry_run and not lease.acquire():
            report.skipped = (
                f"another runner ({lease.holder}) holds the lifecycle lease until "
                f"{datetime.fromtimestamp(lease.holder_expires_ms / 1000, UTC):%Y-%m-%dT%H:%M:%SZ}"
            )
            report.finished_ms = self.clock_ms()
            return report
        try:
            self._run(report, lease, dry_run)
        except LeaseLost as exc:
            report.errors.append(str(exc))
        finally:
            if not dry_run:
                lease.release()
        report.finished_ms = self.clock_ms()
        return report

    def _run(self, report: RunReport, lease: Lease, dry_run: bool) -> None:
        today = datetime.fromtimestamp(self.clock_ms() / 1000, UTC).date()
        # Counts and block lookups below must see every write made so far.
        self.es.options(ignore_status=404).indices.refresh(
            index=f"{EVENTS_PATTERN},{BLOCKS_INDEX}", allow_no_indices=True
        )
        holds = [h for h in list_holds(self.store, self.keyring) if not h.released]
        restored = self._restored_until()
        hot_days = self._hot_days()
        archived = set(list_days(self.store))
        for day in hot_days:
            if self._stop.is_set():
                report.errors.append("stopped before finishing: the receiver is shutting down")
                return
            if not dry_run:
                lease.renew()
            try:
                report.days.append(
                    self._hot_day(day, today, holds, restored, day in archived, dry_run)
                )
            except (ExportError, ColdStoreError, es_exc.ApiError, OSError) as exc:
                report.errors.append(f"{day}: {exc}")
                report.days.append(DayAction(day, "error", str(exc)))
                _log.error("lifecycle step failed", extra={"day": day, "error": str(exc)})
        still_hot = set(self._hot_days())
        for day in sorted(set(list_days(self.store)) - still_hot):
            if self._stop.is_set():
                report.errors.append("stopped before finishing: the receiver is shutting down")
                return
            if not dry_run:
                lease.renew()
            try:
                action = self._archived_day(day, today, holds, dry_run)
            except (ColdStoreError, es_exc.ApiError, OSError, SignedRecordError) as exc:
                report.errors.append(f"{day}: {exc}")
                action = DayAction(day, "error", str(exc))
            if action is not None:
                report.days.append(action)
        report.spans_deleted = self._spans(today, still_hot, dry_run)
        report.oldest_hot_day = min(still_hot, default="")
        for day in list_days(self.store):
            if day not in still_hot:
                report.archived_days += 1
        report.archived_bytes = sum(
            self.store.size(k) or 0 for k in self.store.list("days") if k.endswith(EVENTS)
        )

    # -- hot days ---------------------------------------------------------------

    def _hot_days(self) -> list[str]:
        try:
            names = self.es.indices.get(index=EVENTS_PATTERN, allow_no_indices=True)
        except es_exc.NotFoundError:
            return []
        days = []
        for name in names:
            day = day_of_index(name)
            with contextlib.suppress(ValueError):
                _day(day)
                days.append(day)
        return sorted(days)

    def _present(self, index: str) -> list[tuple[str, str]]:
        """(category, tenant) pairs of the events of an index."""
        resp = self.es.search(
            index=index,
            size=0,
            aggs={
                "c": {
                    "terms": {"field": "audit.category", "size": 100, "missing": ""},
                    "aggs": {
                        "t": {"terms": {"field": "organization.id", "size": 10000, "missing": ""}}
                    },
                }
            },
        )
        return [
            (str(c["key"]), str(t["key"]))
            for c in resp["aggregations"]["c"]["buckets"]
            for t in c["t"]["buckets"]
        ]

    def _hot_day(
        self,
        day: str,
        today: date,
        holds: list[Hold],
        restored: dict[str, int],
        has_manifest: bool,
        dry_run: bool,
    ) -> DayAction:
        index = index_of_day(day)
        age = (today - _day(day)).days
        present = self._present(index)
        policy = self.config.policy_for_day(present)
        base = DayAction(day, "keep", hot_days=policy.hot_days, retain_days=policy.retain_days)
        if age <= policy.hot_days:
            base.detail = f"{age} days old, hot for {policy.hot_days}"
            return base
        if restored.get(day, 0) > self.clock_ms():
            base.detail = "restored; kept until the restore expires"
            return base
        base.events = int(self.es.count(index=index)["count"])
        if dry_run:
            base.action = "index_delete" if not self._held(holds, day, index) else "archive"
            base.detail = (
                "archive and delete the index"
                if base.action == "index_delete"
                else "archive; a legal hold keeps the index"
            )
            return base
        manifest_sha = self._ensure_archive(day, index, present, policy, base, has_manifest)
        if manifest_sha is None:
            return base
        touching = self._held(holds, day, index)
        if touching:
            base.action = "held"
            base.detail = "archived; kept hot by legal hold " + ", ".join(touching)
            return base
        self._delete_hot(day, index, policy, manifest_sha, base)
        return base

    def _ensure_archive(
        self,
        day: str,
        index: str,
        present: list[tuple[str, str]],
        policy: DayPolicy,
        action: DayAction,
        has_manifest: bool,
    ) -> str | None:
        """Archive the day unless a verified archive of exactly its events exists; returns
        the manifest's SHA-256, or None (the action says why)."""
        if has_manifest:
            report = self._verify_archive(day)
            if report.ok and report.manifest is not None and report.events == action.events:
                append_entry(self.store, self.key, day, report.manifest_sha256, self.wall_ms())
                self._record_archived(day, report.manifest)
                action.archive_bytes = self._archive_bytes(report.manifest)
                return report.manifest_sha256
            if report.ok and report.events != action.events:
                action.action = "error"
                action.detail = (
                    f"{action.events - report.events} events arrived after the day was "
                    "archived; the index stays hot (see docs/lifecycle.md)"
                )
                return None
            self.progress(f"{day}: the existing archive does not verify; writing it again")
        tmp = Path(tempfile.mkdtemp(prefix=f"otel-audit-archive-{day}-", dir=self._workdir()))
        try:
            self.progress(f"{day}: exporting {action.events:,} events")
            try:
                files = export_day(
                    self.es,
                    index,
                    self.keyring,
                    self.checkpoints,
                    tmp,
                    progress=lambda n: self.progress(f"{day}: {n:,} events exported"),
                    read_page=self.read_page,
                    fast_extend=self.fast_extend,
                )
            except DayNotReady as exc:
                action.action = "not_ready"
                action.detail = str(exc)
                return None
            self.on_step("exported", day)
            for name in files.files:
                self.store.put_file(day_key(day, name), tmp / name)
                self.on_step(f"uploaded:{name}", day)
            body = manifest_body(day, index, files, self.wall_ms())
            body["present"] = sorted([list(p) for p in present])
            body["policy"] = {"hot_days": policy.hot_days, "retain_days": policy.retain_days}
            manifest = sign_record(body, self.key)
            self.store.put_bytes(
                day_key(day, MANIFEST), orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)
            )
            self.on_step("manifest", day)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.progress(f"{day}: reading the archive back")
        report = self._verify_archive(day)
        if not report.ok or report.events != action.events:
            problems = "; ".join(f.message for f in report.findings[:5]) or (
                f"{report.events} events archived, {action.events} in the index"
            )
            raise ExportError(f"the archive did not verify after writing it: {problems}")
        self.on_step("verified", day)
        assert report.manifest is not None
        append_entry(self.store, self.key, day, report.manifest_sha256, self.wall_ms())
        self.on_step("catalogued", day)
        self._record_archived(day, report.manifest)
        action.action = "archive"
        action.archive_bytes = self._archive_bytes(report.manifest)
        return report.manifest_sha256

    def _verify_archive(self, day: str) -> DayReport:
        """The archived day read back from the cold store and checked against its seals."""
        return verify_day(
            self.store,
            day,
            self.keyring,
            workdir=self._workdir(),
            fast_extend=self.fast_extend,
            fast_leaves=self.fast_leaves,
        )

    @staticmethod
    def _archive_bytes(manifest: dict[str, Any]) -> int:
        return sum(int(f.get("bytes", 0)) for f in manifest.get("files", {}).values())

    def _record_archived(self, day: str, manifest: dict[str, Any]) -> None:
        self._send(
            "audit_log.archive",
            day,
            int(manifest["created_ms"]),
            {
                "day": day,
                "events": manifest.get("events"),
                "store": self.store.url,
                "files": {k: v.get("sha256") for k, v in manifest.get("files", {}).items()},
            },
        )

    def _delete_hot(
        self, day: str, index: str, policy: DayPolicy, manifest_sha: str, action: DayAction
    ) -> None:
        record = self._existing(day, HOT_DELETED, "hot_deleted", manifest_sha)
        if record is None:
            manifest = parse_record(self.store.get_bytes(day_key(day, MANIFEST)), "manifest")
            record = sign_record(
                {
                    "kind": "hot_deleted",
                    "day": day,
                    "index": index,
                    "manifest_sha256": manifest_sha,
                    "events": manifest.get("events"),
                    "leaves": manifest.get("leaves", {}),
                    "decided_ms": self.clock_ms(),
                    "recorded_ms": self.wall_ms(),
                    "hot_days": policy.hot_days,
                    "by": self.owner,
                },
                self.key,
            )
            self.store.put_bytes(
                day_key(day, HOT_DELETED), orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
            )
        put_record(
            self.es,
            f"hot_deleted:{day}",
            {
                "kind": "hot_deleted",
                "day": day,
                "index": index,
                "decided_ms": record["decided_ms"],
                "record": record,
            },
        )
        self.on_step("hot_record", day)
        self._send(
            "audit_log.index_delete",
            index,
            int(record["recorded_ms"]),
            {
                "day": day,
                "index": index,
                "events": record["events"],
                "manifest_sha256": manifest_sha,
                "hot_days": record["hot_days"],
            },
            reason=f"older than hot_days={record['hot_days']}; archived and verified",
        )
        self.on_step("hot_event", day)
        self.es.indices.refresh(index=index)
        now_count = int(self.es.count(index=index)["count"])
        if now_count != record["events"]:
            # Written while it was archived (a late event): the archive lacks it.
            raise ExportError(
                f"{index} now holds {now_count} events, its archive {record['events']}; "
                "the index is kept (see docs/lifecycle.md, late events)"
            )
        self.es.options(ignore_status=404).indices.delete(
            index=f"{index},{REJECTED_INDEX_PREFIX}{day}", ignore_unavailable=True
        )
        self.on_step("index_deleted", day)
        action.action = "index_delete"
        action.detail = f"archived ({action.archive_bytes:,} bytes) and removed from Elasticsearch"

    # -- archived days ------------------------------------------------------------

    def _archived_day(
        self, day: str, today: date, holds: list[Hold], dry_run: bool
    ) -> DayAction | None:
        purged = self.store.get_bytes(day_key(day, PURGED))
        raw = self.store.get_bytes(day_key(day, MANIFEST))
        manifest = parse_record(raw, f"{day} manifest")
        verify_record(manifest, self.keyring, "archive_manifest")
        present = [(str(c), str(t)) for c, t in manifest.get("present", [])]
        policy = self.config.policy_for_day(present)
        age = (today - _day(day)).days
        base = DayAction(
            day,
            "keep",
            events=int(manifest.get("events", 0)),
            hot_days=policy.hot_days,
            retain_days=policy.retain_days,
        )
        files = [n for n in DATA_FILES if self.store.size(day_key(day, n)) is not None]
        if purged is not None and not files:
            return None  # done: only the manifest and the signed records remain
        if age <= policy.retain_days:
            return None  # archived, within retention: nothing to say every run
        touching = self._held_archive(holds, day)
        if touching:
            base.action = "held"
            base.detail = "past retention; kept by legal hold " + ", ".join(touching)
            return base
        base.action = "purge"
        if dry_run:
            base.detail = f"{age} days old, retained for {policy.retain_days}: delete the archive"
            return base
        import hashlib

        manifest_sha = hashlib.sha256(raw or b"").hexdigest()
        record = self._existing(day, PURGED, "purged", manifest_sha)
        if record is None:
            record = sign_record(
                {
                    "kind": "purged",
                    "day": day,
                    "index": index_of_day(day),
                    "manifest_sha256": manifest_sha,
                    "events": manifest.get("events"),
                    "leaves": manifest.get("leaves", {}),
                    "decided_ms": self.clock_ms(),
                    "recorded_ms": self.wall_ms(),
                    "retain_days": policy.retain_days,
                    "files": sorted(manifest.get("files", {})),
                    "by": self.owner,
                },
                self.key,
            )
            self.store.put_bytes(
                day_key(day, PURGED), orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
            )
        put_record(
            self.es,
            f"purged:{day}",
            {
                "kind": "purged",
                "day": day,
                "index": index_of_day(day),
                "decided_ms": record["decided_ms"],
                "record": record,
            },
        )
        self.on_step("purge_record", day)
        self._send(
            "audit_log.purge",
            day,
            int(record["recorded_ms"]),
            {
                "day": day,
                "events": record["events"],
                "manifest_sha256": manifest_sha,
                "retain_days": record["retain_days"],
                "store": self.store.url,
            },
            reason=f"older than retain_days={record['retain_days']}",
        )
        self.on_step("purge_event", day)
        for name in DATA_FILES:
            self.store.delete(day_key(day, name))
        self.on_step("purged", day)
        base.detail = f"archive deleted after {policy.retain_days} days (signed record kept)"
        return base

    def _existing(self, day: str, name: str, kind: str, manifest_sha: str) -> dict[str, Any] | None:
        """A valid signed record a previous (interrupted) run left for this manifest."""
        raw = self.store.get_bytes(day_key(day, name))
        if raw is None:
            return None
        try:
            record = parse_record(raw, name)
            verify_record(record, self.keyring, kind)
        except SignedRecordError:
            return None
        if record.get("manifest_sha256") != manifest_sha or record.get("day") != day:
            return None
        return record

    # -- holds ----------------------------------------------------------------------

    def _held(self, holds: list[Hold], day: str, index: str) -> list[str]:
        out = []
        for hold in holds:
            if not hold.covers_day(day):
                continue
            criteria = hold.criteria()
            if criteria:
                query = {"bool": {"filter": [{"term": {k: v}} for k, v in criteria.items()]}}
                if not self.es.count(index=index, query=query)["count"]:
                    continue
            out.append(hold.hold_id)
        return out

    def _held_archive(self, holds: list[Hold], day: str) -> list[str]:
        relevant = [h for h in holds if h.covers_day(day)]
        if not relevant:
            return []
        out = [h.hold_id for h in relevant if not h.criteria()]
        wanted = sorted({k for h in relevant for k in h.criteria()})
        if wanted and len(out) < len(relevant):
            with tempfile.TemporaryDirectory(dir=self._workdir()) as tmp:
                path = Path(tmp) / EVENTS
                if not self.store.download(day_key(day, EVENTS), path):
                    # No events file to look into: keep whatever a hold might cover.
                    return [h.hold_id for h in relevant]
                table = read_parquet(path, wanted).to_pydict()
            for hold in relevant:
                crit = hold.criteria()
                if not crit or hold.hold_id in out:
                    continue
                n = len(table[wanted[0]])
                if any(all(table[k][i] == v for k, v in crit.items()) for i in range(n)):
                    out.append(hold.hold_id)
        return out

    # -- spans, restores, events ------------------------------------------------------

    def _spans(self, today: date, hot: set[str], dry_run: bool) -> list[str]:
        from indexer.retention import run_span_retention

        hot_dates = {_day(d) for d in hot} if self.config.spans_follow_events else None
        plan = run_span_retention(
            self.es,
            dry_run=dry_run,
            today=today,
            default_days=self.spans_retention_days,
            hot_event_days=hot_dates,
        )
        return [a.index for a in plan if a.action == "delete"]

    def _restored_until(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for doc in read_records(self.es, "restored"):
            out[str(doc.get("day"))] = int(doc.get("until_ms", 0))
        return out

    def _send(
        self, action: str, resource: str, time_ms: int, details: dict[str, Any], reason: str = ""
    ) -> None:
        if self.record is None:
            raise ExportError(
                f"{action} {resource} cannot be recorded: no receiver to write audit events to"
            )
        self.record(
            lifecycle_event(
                action=action,
                resource_id=resource,
                time_ms=time_ms,
                details=details,
                actor=self.owner,
                service_name=self.service_name,
                reason=reason,
            )
        )

    def _workdir(self) -> str | None:
        return self.workdir


def today_of(clock_ms: int) -> date:
    """The UTC day of a clock reading."""
    return datetime.fromtimestamp(clock_ms / 1000, UTC).date()


def days_ago(today: date, days: int) -> str:
    """``YYYY.MM.DD`` of the day ``days`` before ``today``."""
    return (today - timedelta(days=days)).strftime("%Y.%m.%d")


def event_index_of(day: str) -> str:
    """The events index of a day."""
    return EVENTS_INDEX_PREFIX + day
