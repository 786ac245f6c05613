"""``otel-audit lifecycle run``, ``otel-audit hold add|list|release``, ``otel-audit restore``.

They read the receiver's configuration (``--config``, the same file as ``serve``, and
``OTEL_AUDIT_*``): the ``lifecycle`` section (policy, cold store), the signing key of the
``integrity`` section, Elasticsearch. Every action they take is recorded as an audit
event before it is taken: sent to the receiver running at ``http_endpoint`` when one
answers there, else written through an ingest of this process (the receiver's chain,
so only while no receiver runs on the same state directory).

Exit codes: 0 done, 1 a day or the archive could not be processed, 2 bad arguments or
configuration, 3 Elasticsearch, the cold store or the receiver unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from otel_audit.exits import Exit
from receiver.config import ConfigError, ReceiverConfig, load_config, parse_endpoint

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``lifecycle``, ``hold`` and ``restore``."""
    lc = subparsers.add_parser(
        "lifecycle",
        help="archive, retention and legal holds: run the policy once",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lsub = lc.add_subparsers(dest="lifecycle_command", metavar="ACTION", required=True)
    run = lsub.add_parser("run", help="run the lifecycle policy once, with progress")
    _common(run)
    run.add_argument("--dry-run", action="store_true", help="only say what would be done")
    run.set_defaults(handler=_run)

    hold = subparsers.add_parser("hold", help="legal holds: stop deletions (add, list, release)")
    hsub = hold.add_subparsers(dest="hold_command", metavar="ACTION", required=True)
    add = hsub.add_parser("add", help="place a legal hold")
    _common(add)
    add.add_argument("--reason", required=True, help="matter or case reference (recorded)")
    add.add_argument("--tenant", default="", help="events of this tenant (organization.id)")
    add.add_argument("--actor", default="", help="events of this actor (user.id)")
    add.add_argument("--resource-type", default="", help="events on this resource type")
    add.add_argument("--resource-id", default="", help="events on this resource id")
    add.add_argument("--from", dest="from_day", default="", help="first day held, YYYY-MM-DD")
    add.add_argument("--to", dest="to_day", default="", help="last day held, YYYY-MM-DD")
    add.add_argument("--id", dest="hold_id", default="", help="hold id (default generated)")
    add.add_argument("--by", default="", help="who places it (default the login name)")
    add.set_defaults(handler=_hold_add)
    lst = hsub.add_parser("list", help="list holds")
    _common(lst)
    lst.add_argument("--all", action="store_true", help="released holds too")
    lst.set_defaults(handler=_hold_list)
    rel = hsub.add_parser("release", help="release a legal hold")
    _common(rel)
    rel.add_argument("hold_id", metavar="ID")
    rel.add_argument("--by", default="", help="who releases it (default the login name)")
    rel.set_defaults(handler=_hold_release)

    rs = subparsers.add_parser(
        "restore", help="re-index archived days into Elasticsearch (searchable, verified)"
    )
    _common(rs)
    rs.add_argument("--from", dest="from_day", required=True, help="first day, YYYY-MM-DD")
    rs.add_argument("--to", dest="to_day", required=True, help="last day, YYYY-MM-DD")
    rs.add_argument(
        "--keep-days", type=int, default=None, help="days before the policy removes them again"
    )
    rs.add_argument("--by", default="", help="who restores (default the login name)")
    rs.set_defaults(handler=_restore)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="receiver YAML configuration")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _fail(args: argparse.Namespace, message: str, code: Exit) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": message}))
    print(f"otel-audit: error: {message}", file=sys.stderr)
    return code


def _config(args: argparse.Namespace) -> ReceiverConfig:
    return load_config(args.config)


def _receiver_answers(config: ReceiverConfig) -> bool:
    host, port = parse_endpoint(config.http_endpoint)
    try:
        with socket.create_connection(("127.0.0.1" if host == "0.0.0.0" else host, port), 1.0):
            return True
    except OSError:
        return False


@contextmanager
def recorder(config: ReceiverConfig) -> Iterator[Any]:
    """Where the audit events of a command go (see the module docstring)."""
    from receiver.lifecycle import consumer_recorder, otlp_recorder

    if _receiver_answers(config):
        yield otlp_recorder(config.http_endpoint)
        return
    from receiver.ingest.consumer import build_consumer

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="lifecycle-ingest", daemon=True)
    thread.start()
    consumer = build_consumer(config)
    asyncio.run_coroutine_threadsafe(consumer.start(), loop).result(60)
    try:
        yield consumer_recorder(consumer.consume_logs, loop)
    finally:
        # Flushes the writes and seals what was written.
        asyncio.run_coroutine_threadsafe(consumer.shutdown(30), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _progress(args: argparse.Namespace) -> Any:
    def say(message: str) -> None:
        print(f"lifecycle: {message}", file=sys.stderr, flush=True)

    return say


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _run(args: argparse.Namespace) -> int:
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    from indexer.lifecycle.store import ColdStoreError
    from receiver.lifecycle import build_runner

    try:
        config = _config(args)
    except ConfigError as exc:
        return _fail(args, str(exc), Exit.USAGE)
    try:
        if args.dry_run:
            runner = build_runner(config, None, progress=_progress(args))
            report = runner.run(dry_run=True)
        else:
            with recorder(config) as record:
                runner = build_runner(config, record, progress=_progress(args))
                report = runner.run()
    except (ApiError, TransportError, ColdStoreError, RuntimeError, OSError) as exc:
        return _fail(args, str(exc), Exit.UNAVAILABLE)
    if args.json:
        print(json.dumps(report.to_json_dict(), indent=2))
    else:
        if report.skipped:
            print(f"skipped: {report.skipped}")
        for d in report.days:
            print(f"{d.day}  {d.action:13} {d.detail}")
        for name in report.spans_deleted:
            print(f"spans      {'would delete' if report.dry_run else 'deleted'} {name}")
        print(
            f"{report.archived_days} days archived only, oldest hot day "
            f"{report.oldest_hot_day or '-'}, {len(report.errors)} errors"
        )
        for err in report.errors:
            print(f"error: {err}", file=sys.stderr)
    return Exit.OK if report.ok else Exit.FINDINGS


def _who(args: argparse.Namespace) -> str:
    return str(args.by or getpass.getuser())


def _hold_add(args: argparse.Namespace) -> int:
    from indexer.lifecycle.audit_events import lifecycle_event
    from indexer.lifecycle.holds import HoldError, add_hold
    from indexer.lifecycle.store import ColdStoreError
    from receiver.lifecycle import cold_store_of, integrity_config_of
    from receiver.sealing.sealer import load_signing_key

    try:
        config = _config(args)
        store = cold_store_of(config)
        key = load_signing_key(integrity_config_of(config))
        now = _now_ms()
        with recorder(config) as record:
            hold = add_hold(
                store,
                key,
                reason=args.reason,
                created_by=_who(args),
                now_ms=now,
                tenant=args.tenant,
                actor=args.actor,
                resource_type=args.resource_type,
                resource_id=args.resource_id,
                from_day=args.from_day,
                to_day=args.to_day,
                hold_id=args.hold_id,
            )
            record(
                lifecycle_event(
                    action="audit_log.hold_add",
                    resource_id=hold.hold_id,
                    time_ms=now,
                    details=hold.to_json_dict(),
                    actor=_who(args),
                    actor_type="user",
                    service_name="otel-audit-lifecycle",
                    reason=hold.reason,
                )
            )
    except (ConfigError, HoldError) as exc:
        return _fail(args, str(exc), Exit.USAGE)
    except (ColdStoreError, RuntimeError, OSError) as exc:
        return _fail(args, str(exc), Exit.UNAVAILABLE)
    if args.json:
        print(json.dumps({"ok": True, "hold": hold.to_json_dict()}))
    else:
        print(f"hold {hold.hold_id} placed: {hold.reason}")
    return Exit.OK


def _hold_list(args: argparse.Namespace) -> int:
    from indexer.lifecycle.holds import list_holds
    from indexer.lifecycle.store import ColdStoreError
    from receiver.lifecycle import cold_store_of, keyring_of

    try:
        config = _config(args)
        holds = list_holds(cold_store_of(config), keyring_of(config))
    except ConfigError as exc:
        return _fail(args, str(exc), Exit.USAGE)
    except (ColdStoreError, OSError) as exc:
        return _fail(args, str(exc), Exit.UNAVAILABLE)
    shown = [h for h in holds if args.all or not h.released]
    if args.json:
        print(json.dumps({"ok": True, "holds": [h.to_json_dict() for h in shown]}))
        return Exit.OK
    if not shown:
        print("no holds", file=sys.stderr)
    for h in shown:
        what = ", ".join(f"{k}={v}" for k, v in h.criteria().items()) or "every event"
        span = f"{h.from_day or '...'}..{h.to_day or '...'}"
        state = "released" if h.released else "active"
        print(f"{h.hold_id}  {state:8}  {span:24}  {what}  ({h.reason}, by {h.created_by})")
        for problem in h.problems:
            print(f"    warning: {problem}")
    return Exit.OK


def _hold_release(args: argparse.Namespace) -> int:
    from indexer.lifecycle.audit_events import lifecycle_event
    from indexer.lifecycle.holds import HoldError, release_hold
    from indexer.lifecycle.store import ColdStoreError
    from receiver.lifecycle import cold_store_of, integrity_config_of
    from receiver.sealing.sealer import load_signing_key

    try:
        config = _config(args)
        store = cold_store_of(config)
        key = load_signing_key(integrity_config_of(config))
        now = _now_ms()
        with recorder(config) as record:
            # Recorded first: a release that cannot be recorded does not happen.
            record(
                lifecycle_event(
                    action="audit_log.hold_release",
                    resource_id=args.hold_id,
                    time_ms=now,
                    details={"id": args.hold_id},
                    actor=_who(args),
                    actor_type="user",
                    service_name="otel-audit-lifecycle",
                )
            )
            hold = release_hold(store, key, args.hold_id, released_by=_who(args), now_ms=now)
    except (ConfigError, HoldError) as exc:
        return _fail(args, str(exc), Exit.USAGE)
    except (ColdStoreError, RuntimeError, OSError) as exc:
        return _fail(args, str(exc), Exit.UNAVAILABLE)
    if args.json:
        print(json.dumps({"ok": True, "hold": hold.to_json_dict()}))
    else:
        print(f"hold {hold.hold_id} released")
    return Exit.OK


def _restore(args: argparse.Namespace) -> int:
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    from indexer.es_client import EsConnection, sync_client
    from indexer.lifecycle.restore import RestoreError, parse_day, restore_days
    from indexer.lifecycle.store import ColdStoreError
    from indexer.templates import TemplateConflict, install_templates
    from receiver.lifecycle import cold_store_of, keyring_of, lifecycle_config_of

    try:
        config = _config(args)
        first, last = parse_day(args.from_day), parse_day(args.to_day)
        if first > last:
            raise RestoreError(f"--from {first} is after --to {last}")
    except (ConfigError, RestoreError) as exc:
        return _fail(args, str(exc), Exit.USAGE)
    keep = (
        args.keep_days
        if args.keep_days is not None
        else (lifecycle_config_of(config).restore_keep_days)
    )
    es = sync_client(EsConnection.from_config(config), request_timeout=120)
    try:
        try:
            install_templates(es)
        except TemplateConflict as exc:  # a newer or hand-changed template still maps them
            print(f"otel-audit lifecycle: templates left as they are: {exc}", file=sys.stderr)
        with recorder(config) as record:
            report = restore_days(
                es,
                cold_store_of(config),
                keyring_of(config),
                first=first,
                last=last,
                keep_days=keep,
                now_ms=_now_ms(),
                record=record,
                actor=_who(args),
                progress=_progress(args),
            )
    except RestoreError as exc:
        return _fail(args, str(exc), Exit.FINDINGS)
    except (ApiError, TransportError, ColdStoreError, RuntimeError, OSError) as exc:
        return _fail(args, str(exc), Exit.UNAVAILABLE)
    finally:
        es.close()
    if args.json:
        print(json.dumps({"ok": not report.skipped, **report.to_json_dict()}))
    else:
        for day, n in report.restored.items():
            print(f"{day}  restored {n:,} events")
        for day, why in report.skipped.items():
            print(f"{day}  skipped: {why}")
    return Exit.OK if report.restored or not report.skipped else Exit.FINDINGS
