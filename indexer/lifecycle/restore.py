"""Restore: archived days back into Elasticsearch, searchable again and verified as usual.

A restored day is re-indexed into its own daily index (``audit-events-D``, the name its
blocks give), so the events template, the read alias, the query API, Kibana and
``verify`` all treat it like any hot day. Only a day whose archive verifies is restored,
and every document is created with its event id (``op_type=create``): restoring twice,
or after a crash, stores each event once. A ``restored`` marker in the lifecycle index
keeps the policy from removing the day again for ``restore_keep_days``; then it goes
(its archive is still there). The restore is recorded as an ``audit_log.restore`` event.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from elasticsearch import Elasticsearch

from indexer.lifecycle.archive import EVENTS, day_key, index_of_day, list_days, verify_day
from indexer.lifecycle.audit_events import RecordEvent, lifecycle_event
from indexer.lifecycle.records import put_record
from indexer.lifecycle.store import ColdStore
from otel_audit.integrity import Keyring

__all__ = ["RestoreError", "RestoreReport", "restore_days", "restore_file"]


class RestoreError(Exception):
    """A day cannot be restored; the message says why."""


@dataclass(slots=True)
class RestoreReport:
    """Days restored (events created) and days left as they were."""

    restored: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    until_ms: int = 0

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"restored": self.restored, "skipped": self.skipped, "until_ms": self.until_ms}


def _days_between(first: date, last: date) -> list[str]:
    out = []
    day = first
    while day <= last:
        out.append(day.strftime("%Y.%m.%d"))
        day += timedelta(days=1)
    return out


_BULK_EVENTS = 5000
_BULK_HEADERS = {"content-type": "application/x-ndjson", "accept": "application/json"}


def _bodies(path: Path, index: str) -> Iterator[tuple[bytes, int]]:
    """Bulk request bodies of the archived events: each event's archived bytes as the
    document, unparsed (they are the JSON its leaf hashes), created under its event id."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    for batch in table.iter_batches(batch_size=_BULK_EVENTS, columns=["event_id", "source"]):
        ids = batch.column(0).to_pylist()
        sources = batch.column(1).to_pylist()
        lines: list[bytes] = []
        for eid, source in zip(ids, sources, strict=True):
            if type(eid) is not str or type(source) is not bytes or b"\n" in source:
                raise RestoreError(f"{path.name}: event {eid!r} is not one line of JSON")
            lines.append(orjson.dumps({"create": {"_index": index, "_id": eid}}))
            lines.append(source)
        lines.append(b"")
        yield b"\n".join(lines), len(ids)


def _send(es: Elasticsearch, body: bytes, index: str) -> int:
    """One bulk request; the events it created (409, already there, is not an error)."""
    resp = es.perform_request(
        "POST",
        "/_bulk",
        headers=_BULK_HEADERS,
        body=body,
        params={"filter_path": "items.*.status,items.*.error"},
    ).body
    created = 0
    for item in resp.get("items", []):
        result = next(iter(item.values()))
        status = result.get("status", 0)
        if status == 201:
            created += 1
        elif status != 409:
            raise RestoreError(f"{index}: Elasticsearch refused an event: {result}")
    return created


def restore_file(es: Elasticsearch, path: Path, index: str, threads: int = 2) -> int:
    """Create every event of an archived events file in ``index``; returns how many were
    new (an event already there, from an earlier restore, answers 409 and is left)."""
    created = 0
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="restore") as pool:
        pending: list[Future[int]] = []
        for body, _count in _bodies(path, index):
            pending.append(pool.submit(_send, es, body, index))
            if len(pending) >= threads:
                created += pending.pop(0).result()
        for future in pending:
            created += future.result()
    return created


def restore_days(
    es: Elasticsearch,
    store: ColdStore,
    keyring: Keyring,
    *,
    first: date,
    last: date,
    keep_days: int,
    now_ms: int,
    record: RecordEvent | None,
    actor: str,
    service_name: str = "otel-audit-lifecycle",
    progress: Callable[[str], None] | None = None,
) -> RestoreReport:
    """Restore the archived days from ``first`` to ``last`` (inclusive)."""
    say = progress or (lambda _m: None)
    report = RestoreReport(until_ms=now_ms + keep_days * 86_400_000)
    archived = set(list_days(store))
    wanted = [d for d in _days_between(first, last) if d in archived]
    if not wanted:
        raise RestoreError(f"no archived day between {first} and {last} in {store.url}")
    if record is None:
        raise RestoreError("a restore must be recorded: no receiver to write audit events to")
    days = [d for d in wanted if not es.indices.exists(index=index_of_day(d))]
    for day in sorted(set(wanted) - set(days)):
        report.skipped[day] = "already in Elasticsearch"
    if days:
        record(
            lifecycle_event(
                action="audit_log.restore",
                resource_id=f"{days[0]}..{days[-1]}",
                time_ms=now_ms,
                details={"days": days, "until_ms": report.until_ms, "store": store.url},
                actor=actor,
                actor_type="user",
                service_name=service_name,
            )
        )
    for day in days:
        check = verify_day(store, day, keyring)
        if check.state != "archived":
            problems = "; ".join(f.message for f in check.findings[:3]) or check.state
            report.skipped[day] = f"archive does not verify: {problems}"
            continue
        index = index_of_day(day)
        # The marker first: the policy must not delete a day while it is being restored.
        put_record(
            es,
            f"restored:{day}",
            {"kind": "restored", "day": day, "index": index, "until_ms": report.until_ms},
        )
        with tempfile.TemporaryDirectory(prefix="otel-audit-restore-") as tmp:
            path = Path(tmp) / EVENTS
            if not store.download(day_key(day, EVENTS), path):
                report.skipped[day] = "events file missing"
                continue
            created = restore_file(es, path, index)
        es.indices.refresh(index=index)
        report.restored[day] = created
        say(f"{day}: {created:,} events restored into {index}")
    return report


def parse_day(text: str) -> date:
    """A ``YYYY-MM-DD`` (or ``YYYY.MM.DD``) argument."""
    for fmt in ("%Y-%m-%d", "%Y.%m.%d"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise RestoreError(f"{text!r} is not a date YYYY-MM-DD")
