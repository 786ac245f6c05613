"""The scheduled verify inside ``serve`` finds any edit, insert or delete, of an event of
any age, in its next run, though only every ``full_every``-th run reads everything.

Each attack happens after a clean incremental run, to an event sealed before the last
verified checkpoint, with the default ``watch.full_every`` (12): the next run must report
it in the metrics and turn ``/readyz`` unready. A run may already be under way when the
store is changed, so the finding is due by the second run completed after the change,
ten runs before the next full one. Real Elasticsearch and a real ``serve``."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable

import pytest
from elasticsearch import Elasticsearch

from tests.receiver.test_watch import Serve, serve_factory, wait  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

FULL_EVERY = 12
"""The default ``watch.full_every``."""


def _runs(serve: Serve) -> int:
    return int(
        sum(
            serve.metric(f'verify_runs_total{{outcome="{o}"}}') or 0
            for o in ("clean", "findings", "error")
        )
    )


def _verified(serve: Serve, events: int, *, incremental: bool | None) -> None:
    kind = {True: "incremental", False: "full", None: "scheduled"}[incremental]
    wait(
        f"a clean {kind} run over {events} events",
        lambda: (
            serve.metric("verify_last_events_checked") == events
            and (incremental is None or serve.metric("verify_last_incremental") == incremental)
            and serve.ready() == 200
            and not serve.metric('verify_runs_total{outcome="findings"}')
        ),
    )


def _settled(serve: Serve, es: Elasticsearch, total: int) -> None:
    """All ``total`` events stored and verified: two runs completed after they were all
    stored, and the last run read nothing new, so the mark and checkpoint are past them.
    (The receiver may store one request in several bulks, so no single run need read
    them all.)"""

    def stored() -> bool:
        es.indices.refresh(index="audit-events-*")
        return bool(es.count(index="audit-events-*")["count"] == total)

    wait(f"{total} events stored", stored)
    before = _runs(serve)
    wait("two runs after them", lambda: _runs(serve) >= before + 2)
    _verified(serve, 0, incremental=True)


def _old_sealed_store(serve: Serve, es: Elasticsearch) -> dict[str, object]:
    """20 events verified, then 10 more; returns one of the first 20 (sealed before the
    checkpoint the runs now start from)."""
    serve.send(0, 20)
    _settled(serve, es, 20)
    serve.send(20, 10)
    _settled(serve, es, 30)
    hit = es.search(index="audit-events-*", size=1, sort=[{"@timestamp": "asc"}])["hits"]["hits"]
    return dict(hit[0])


def _found_in_next_run(serve: Serve, kind: str) -> None:
    before = _runs(serve)
    wait(
        f"a {kind} finding",
        lambda: serve.metric(f'verify_findings{{kind="{kind}"}}') or _runs(serve) >= before + 2,
    )
    assert serve.metric(f'verify_findings{{kind="{kind}"}}'), (
        f"two runs completed after the change without a {kind} finding"
    )
    assert _runs(serve) <= before + 2
    assert serve.ready() == 503
    assert serve.metric('verify_runs_total{outcome="findings"}')


@pytest.fixture
def watched(serve_factory: Callable[..., Serve]) -> Serve:  # noqa: F811
    return serve_factory(full_every=FULL_EVERY)


def test_an_edit_of_an_old_sealed_event_is_found_by_the_next_run(
    watched: Serve, es: Elasticsearch
) -> None:
    hit = _old_sealed_store(watched, es)
    source = copy.deepcopy(hit["_source"])
    assert isinstance(source, dict)
    source["event"]["outcome"] = "failure"
    es.index(index=str(hit["_index"]), id=str(hit["_id"]), document=source, refresh=True)
    _found_in_next_run(watched, "modified")


def test_a_back_dated_insert_is_found_by_the_next_run(watched: Serve, es: Elasticsearch) -> None:
    hit = _old_sealed_store(watched, es)
    forged = copy.deepcopy(hit["_source"])
    assert isinstance(forged, dict)
    eid = str(uuid.uuid4())
    forged["event"]["id"] = eid
    # A day long gone, in its own daily index, ingested (it says) back then.
    forged["@timestamp"] = "2025-01-02T03:04:05.000Z"
    forged["event"]["ingested"] = "2025-01-02T03:04:06.000Z"
    es.index(index="audit-events-2025.01.02", id=eid, document=forged, op_type="create")
    es.indices.refresh(index="audit-events-*")
    _found_in_next_run(watched, "inserted")


def test_a_delete_of_an_old_sealed_event_is_found_by_the_next_run(
    watched: Serve, es: Elasticsearch
) -> None:
    hit = _old_sealed_store(watched, es)
    es.delete(index=str(hit["_index"]), id=str(hit["_id"]), refresh=True)
    _found_in_next_run(watched, "missing")


def test_a_restarted_receiver_goes_on_from_its_saved_mark(
    watched: Serve, es: Elasticsearch
) -> None:
    hit = _old_sealed_store(watched, es)
    assert watched.stop() == 0
    assert (watched.state / "watch-state.json").is_file()
    # Changed while the receiver was down: below the saved mark.
    es.delete(index=str(hit["_index"]), id=str(hit["_id"]), refresh=True)
    watched.start()
    wait("the first run after the restart", lambda: _runs(watched) >= 1)
    assert watched.metric('verify_findings{kind="missing"}') == 1.0
    assert watched.ready() == 503


def test_a_restart_without_changes_runs_incremental(watched: Serve, es: Elasticsearch) -> None:
    _old_sealed_store(watched, es)
    assert watched.stop() == 0
    watched.start()
    wait("the first run after the restart", lambda: _runs(watched) >= 1)
    assert watched.metric("verify_last_incremental") == 1.0
    assert watched.metric("verify_last_events_checked") == 0.0
    assert watched.ready() == 200


def test_an_insert_still_pending_when_a_run_ends_is_reported_by_the_next(
    serve_factory: Callable[..., Serve],  # noqa: F811
    es: Elasticsearch,
) -> None:
    # A sealing deadline (grace 3 s) longer than a run waits for it (max_wait 0.5 s), as
    # with the defaults (5 s, 2 s): the run that first reads the forged event can only
    # call it pending; the next run, more than the deadline later, must call it inserted
    # (each run counting the deadline from its own start would leave it pending forever).
    serve = serve_factory(full_every=FULL_EVERY, grace_s=3.0, max_wait_s=0.5, interval_s=4.0)
    serve.send(0, 5)
    _settled(serve, es, 5)
    hit = es.search(index="audit-events-*", size=1)["hits"]["hits"][0]
    forged = copy.deepcopy(hit["_source"])
    eid = str(uuid.uuid4())
    forged["event"]["id"] = eid
    es.index(index=hit["_index"], id=eid, document=forged, op_type="create", refresh=True)
    before = _runs(serve)
    wait("a run that reads the forged event", lambda: _runs(serve) >= before + 2)
    wait(
        "an inserted finding",
        lambda: serve.metric('verify_findings{kind="inserted"}') or _runs(serve) >= before + 4,
        timeout_s=60,
    )
    assert serve.metric('verify_findings{kind="inserted"}') == 1.0
    assert serve.ready() == 503
