"""The policy against the real Elasticsearch and the real S3 server, with an injected clock:
days move hot -> archive -> deleted, each step verified and recorded; holds stop deletion."""

from __future__ import annotations

from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from indexer.lifecycle.archive import list_days
from indexer.lifecycle.holds import add_hold, list_holds, release_hold
from indexer.lifecycle.verify_archive import verify_archive
from indexer.local_s3 import LocalS3
from receiver.config import load_config
from receiver.lifecycle import cold_store_of, integrity_config_of
from receiver.sealing.sealer import load_signing_key
from tests.indexer.lifecycle.verify_helpers import keyring, verify_es
from tests.support.lifecycle_harness import (
    Clock,
    Ingest,
    day_name,
    day_start_ms,
    lifecycle_events,
    records_on,
    run,
    runner,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.lifecycle]


def _actions(report: object) -> dict[str, str]:
    """What the run did, day by day (today's index, holding the run's own audit events,
    is always kept)."""
    out: dict[str, str] = {}
    for d in report.days:  # type: ignore[attr-defined]
        if d.action != "keep":
            out[d.day] = f"{out[d.day]}+{d.action}" if d.day in out else d.action
    return out


def test_days_move_hot_archive_deleted(
    lifecycle_es: Elasticsearch, s3: LocalS3, tmp_path: Path
) -> None:
    es = lifecycle_es
    path = write_config(tmp_path, es.transport.node_pool.get().base_url, s3)
    config = load_config(path)
    old, middle, recent = day_start_ms(100), day_start_ms(40), day_start_ms(5)
    clock = Clock()
    with Ingest(config) as ingest:
        ingest.store(records_on(old, 120) + records_on(middle, 80) + records_on(recent, 50))
        ingest.seal()
        first = run(runner(path, ingest.record, clock))
        ingest.seal()
    # hot_days 30, retain_days 120: two days leave Elasticsearch, the recent one stays.
    assert _actions(first) == {day_name(old): "index_delete", day_name(middle): "index_delete"}
    assert not es.indices.exists(index=f"audit-events-{day_name(old)}")
    assert es.indices.exists(index=f"audit-events-{day_name(recent)}")
    store = cold_store_of(config)
    assert list_days(store) == [day_name(old), day_name(middle)]

    # The policy's deletions are not "missing": verify is clean and says where they went.
    report = verify_es(es, tmp_path)
    assert report.ok, [f.message for f in report.findings[:5]]
    assert report.events_archived == 200
    archive = verify_archive(store, keyring(tmp_path))
    assert archive.ok and [d.state for d in archive.days] == ["archived", "archived"]
    actions = sorted(
        (e["event"]["action"], e["audit"]["resource"]["id"]) for e in lifecycle_events(es)
    )
    assert actions == sorted(
        [
            ("audit_log.archive", day_name(old)),
            ("audit_log.archive", day_name(middle)),
            ("audit_log.index_delete", f"audit-events-{day_name(old)}"),
            ("audit_log.index_delete", f"audit-events-{day_name(middle)}"),
        ]
    )

    # 30 days later: the oldest is past retention (130 > 120) and its archive goes,
    # by a signed record; the recent day (35 > 30) is archived in turn.
    clock.advance_days(30)
    with Ingest(config) as ingest:
        second = run(runner(path, ingest.record, clock))
        ingest.seal()
    assert _actions(second) == {day_name(recent): "index_delete", day_name(old): "purge"}
    archive = verify_archive(store, keyring(tmp_path))
    assert archive.ok, archive.to_json_dict()
    assert {d.day: d.state for d in archive.days} == {
        day_name(old): "purged",
        day_name(middle): "archived",
        day_name(recent): "archived",
    }
    assert not [k for k in store.list(f"days/{day_name(old)}") if k.endswith(".parquet")]
    purges = [e for e in lifecycle_events(es) if e["event"]["action"] == "audit_log.purge"]
    assert len(purges) == 1 and purges[0]["audit"]["resource"]["id"] == day_name(old)
    report = verify_es(es, tmp_path)
    assert report.ok, [f.message for f in report.findings[:5]]
    assert report.events_archived == 250

    # A run with nothing due changes nothing.
    with Ingest(config) as ingest:
        third = run(runner(path, ingest.record, clock))
    assert _actions(third) == {}


def test_an_attackers_deletion_is_missing_a_policy_deletion_is_not(
    lifecycle_es: Elasticsearch, s3: LocalS3, tmp_path: Path
) -> None:
    es = lifecycle_es
    path = write_config(tmp_path, es.transport.node_pool.get().base_url, s3)
    config = load_config(path)
    archived_day, attacked_day = day_start_ms(50), day_start_ms(45)
    with Ingest(config) as ingest:
        ingest.store(records_on(archived_day, 40) + records_on(attacked_day, 30))
        ingest.seal()
        # hot_days 47: only the older day is the policy's to remove.
        run(runner(write_config(tmp_path, _url(es), s3, hot_days=47), ingest.record, Clock()))
        ingest.seal()
    es.indices.delete(index=f"audit-events-{day_name(attacked_day)}")
    report = verify_es(es, tmp_path)
    assert report.events_archived == 40
    missing = [f for f in report.findings if str(f.kind) == "missing"]
    assert len(missing) == 30
    assert {f.index for f in missing} == {f"audit-events-{day_name(attacked_day)}"}

    # A forged lifecycle record (the attacker has no signing key) covers nothing.
    doc = es.get(index="audit-lifecycle", id=f"hot_deleted:{day_name(archived_day)}")["_source"]
    forged = dict(doc["record"])
    forged["day"] = day_name(attacked_day)
    forged["index"] = f"audit-events-{day_name(attacked_day)}"
    es.index(
        index="audit-lifecycle",
        id=f"hot_deleted:{day_name(attacked_day)}",
        document={**doc, "day": forged["day"], "record": forged},
        refresh=True,
    )
    report = verify_es(es, tmp_path)
    assert len([f for f in report.findings if str(f.kind) == "missing"]) == 30


def _url(es: Elasticsearch) -> str:
    return str(es.transport.node_pool.get().base_url)


def test_a_legal_hold_stops_deletion_until_released(
    lifecycle_es: Elasticsearch, s3: LocalS3, tmp_path: Path
) -> None:
    es = lifecycle_es
    # Per-tenant rules: the tenants' days are hot for 30 days; everything else (the
    # lifecycle's own audit events of today) for 200, so the shifted clock leaves it hot.
    rules = [{"tenant": t, "hot_days": 30, "retain_days": 120} for t in ("acme", "globex")]
    path = write_config(tmp_path, _url(es), s3, hot_days=200, retain_days=200, rules=rules)
    config = load_config(path)
    held_day, free_day = day_start_ms(60), day_start_ms(61)
    store = cold_store_of(config)
    key = load_signing_key(integrity_config_of(config))
    clock = Clock()
    with Ingest(config) as ingest:
        ingest.store(
            records_on(held_day, 30, tenant="acme", actor="mallory")
            + records_on(free_day, 30, tenant="globex")
        )
        ingest.seal()
        hold = add_hold(
            store, key, reason="case 2024-17", created_by="legal", now_ms=clock(),
            actor="mallory",
        )  # fmt: skip
        first = run(runner(path, ingest.record, clock))
        ingest.seal()
    assert _actions(first) == {day_name(held_day): "held", day_name(free_day): "index_delete"}
    assert es.indices.exists(index=f"audit-events-{day_name(held_day)}")
    assert day_name(held_day) in list_days(store)  # archived all the same

    # Past retention too, the hold keeps the archive (and the hot index).
    clock.advance_days(100)
    with Ingest(config) as ingest:
        second = run(runner(path, ingest.record, clock))
        ingest.seal()
    assert _actions(second)[day_name(held_day)] == "held"
    assert _actions(second)[day_name(free_day)] == "purge"

    # A forged release (not signed by the receiver's key) releases nothing.
    store.put_bytes(f"holds/{hold.hold_id}.release.json", b'{"kind": "legal_hold_release"}')
    assert not list_holds(store, keyring(tmp_path))[0].released
    store.delete(f"holds/{hold.hold_id}.release.json")

    release_hold(store, key, hold.hold_id, released_by="legal", now_ms=clock())
    with Ingest(config) as ingest:
        third = run(runner(path, ingest.record, clock))
        ingest.seal()
    # Released: the index goes, and the archive (160 days > 120) with it.
    assert _actions(third) == {day_name(held_day): "index_delete+purge"}
    assert {d.day: d.state for d in verify_archive(store, keyring(tmp_path)).days}[
        day_name(held_day)
    ] == "purged"
    assert verify_es(es, tmp_path).ok


def test_dead_letters_and_spans_follow_their_days_events(
    lifecycle_es: Elasticsearch, s3: LocalS3, tmp_path: Path
) -> None:
    import gzip

    from indexer.deadletter import rejected_item
    from otel_audit.validate import Violation

    es = lifecycle_es
    path = write_config(tmp_path, _url(es), s3)
    config = load_config(path)
    old, recent = day_start_ms(40), day_start_ms(10)
    for day in (old, recent):
        item = rejected_item(
            "validation",
            [Violation("audit.outcome", "enum", "'ok' is not one of success, failure")],
            received_ns=(day + 7_200_000) * 1_000_000,
            record=records_on(day, 1)[0],
        )
        es.index(
            index=f"audit-rejected-{day_name(day)}",
            id=item.doc_id,
            document=item.document,
            refresh=True,
        )
        es.indices.create(index=f"audit-spans-{day_name(day)}")
    with Ingest(config) as ingest:
        ingest.store(records_on(old, 20) + records_on(recent, 20))
        ingest.seal()
        report = run(runner(path, ingest.record, Clock()))
    assert _actions(report) == {day_name(old): "index_delete"}
    # The old day's dead letters went into its archive and left with its events.
    assert not es.indices.exists(index=f"audit-rejected-{day_name(old)}")
    assert es.indices.exists(index=f"audit-rejected-{day_name(recent)}")
    store = cold_store_of(config)
    lines = gzip.decompress(store.get_bytes(f"days/{day_name(old)}/rejected.ndjson.gz") or b"")
    assert b"'ok' is not one of success, failure" in lines
    assert verify_archive(store, keyring(tmp_path)).ok
    # Spans older than spans.retention_days (7) go once their day's events are not hot;
    # the recent day's events are hot, so its spans stay for their trace views.
    assert not es.indices.exists(index=f"audit-spans-{day_name(old)}")
    assert es.indices.exists(index=f"audit-spans-{day_name(recent)}")
    assert f"audit-spans-{day_name(old)}" in report.spans_deleted
