"""Retention of the span indices: delete daily ``audit-spans-*`` indices past their days.

Spans are context for audit events, not audit records: a span index is deleted once it
is older than ``spans.retention_days`` (recorded in every span index's mapping ``_meta``)
*and* no audit event that it explains is still hot. Trace views start from an event and
look up its trace's spans, which start no later than the event: so a span index of day
``D`` is kept while the events of ``D`` or ``D + 1`` are in Elasticsearch. Audit events
themselves are never deleted here; the lifecycle (:mod:`indexer.lifecycle.runner`)
archives them, deletes them past their policy and runs this step at the end of each run.

``otel-audit retention run`` runs this step alone (from cron or a Kubernetes CronJob).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from indexer.indices import EVENTS_INDEX_PREFIX, EVENTS_PATTERN, SPANS_INDEX_PREFIX

__all__ = ["RetentionAction", "plan_span_retention", "register", "run_span_retention"]

_DEFAULT_PREFIX = SPANS_INDEX_PREFIX


@dataclass(frozen=True, slots=True)
class RetentionAction:
    """One index and what the job does (or would do) with it."""

    index: str
    day: str
    retention_days: int
    action: str  # delete | keep


def _index_day(name: str, prefix: str) -> date | None:
    try:
        return datetime.strptime(name.removeprefix(prefix), "%Y.%m.%d").date()
    except ValueError:
        return None


def plan_span_retention(
    es: Any,
    *,
    today: date | None = None,
    default_days: int = 7,
    prefix: str = _DEFAULT_PREFIX,
    hot_event_days: set[date] | None = None,
) -> list[RetentionAction]:
    """Decide, per daily span index, whether it is past its retention.

    ``hot_event_days`` (the days whose event index exists) keeps a span index while its
    day or the next holds hot events; None reads them from Elasticsearch.
    """
    today = today or datetime.now(UTC).date()
    if hot_event_days is None:
        hot_event_days = _hot_event_days(es)
    mappings = es.indices.get_mapping(index=prefix + "*", allow_no_indices=True)
    actions = []
    for name in sorted(mappings):
        day = _index_day(name, prefix)
        if day is None:
            continue  # not one of ours (a differently named index matching the pattern)
        meta = mappings[name].get("mappings", {}).get("_meta", {})
        days = int(meta.get("retention_days", default_days))
        expired = day < today - timedelta(days=days)
        if expired and (day in hot_event_days or day + timedelta(days=1) in hot_event_days):
            actions.append(RetentionAction(name, day.isoformat(), days, "keep"))
            continue
        actions.append(
            RetentionAction(name, day.isoformat(), days, "delete" if expired else "keep")
        )
    return actions


def _hot_event_days(es: Any) -> set[date]:
    names = es.indices.get(index=EVENTS_PATTERN, allow_no_indices=True)
    days = (_index_day(name, EVENTS_INDEX_PREFIX) for name in names)
    return {d for d in days if d is not None}


def run_span_retention(
    es: Any,
    *,
    dry_run: bool = False,
    today: date | None = None,
    default_days: int = 7,
    hot_event_days: set[date] | None = None,
) -> list[RetentionAction]:
    """Delete the expired span indices (unless ``dry_run``); returns the plan."""
    plan = plan_span_retention(
        es, today=today, default_days=default_days, hot_event_days=hot_event_days
    )
    if not dry_run:
        for action in plan:
            if action.action == "delete":
                es.indices.delete(index=action.index)
    return plan


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "retention",
        help="delete span indices past their retention while no event they explain is hot",
    )
    sub = parser.add_subparsers(dest="retention_command", required=True, metavar="SUBCOMMAND")
    run = sub.add_parser("run", help="apply the span retention now")
    run.add_argument("--es-url", default=None, help="default: OTEL_AUDIT_ES_URL")
    run.add_argument("--dry-run", action="store_true", help="only show what would be deleted")
    run.add_argument("--default-days", type=int, default=7, help="for indices without _meta")
    run.add_argument("--json", action="store_true")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from elasticsearch import ApiError, TransportError

    from indexer.es_client import EsConnection, describe_error, sync_client
    from otel_audit.exits import Exit

    try:
        connection = EsConnection.from_env(url=args.es_url)
    except ValueError as exc:
        print(f"retention: {exc}", file=sys.stderr)
        return Exit.USAGE
    es = sync_client(connection, request_timeout=60)
    try:
        plan = run_span_retention(es, dry_run=args.dry_run, default_days=args.default_days)
    except (ApiError, TransportError) as exc:
        print(f"retention: {describe_error(exc, connection)}", file=sys.stderr)
        return Exit.UNAVAILABLE
    finally:
        es.close()
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "indices": [asdict(a) for a in plan]}))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for a in plan:
        shown = verb if a.action == "delete" else "keep"
        print(f"{shown:12} {a.index}  (day {a.day}, retention {a.retention_days} d)")
    if not plan:
        print("no span indices", file=sys.stderr)
    return 0
