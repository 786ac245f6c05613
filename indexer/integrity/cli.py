"""``otel-audit verify`` and ``otel-audit prove``: the auditor's commands.

``verify [--from T] [--to T] [--chain ID] [--since CHECKPOINT] --public-key KEY
[--checkpoint-dir DIR] [--json]`` checks blocks, external checkpoints and events; exit
status 0 when clean, 1 when there are findings, 4 when nothing was altered but a chain's
newest checkpoint is older than its heartbeat allows (stale), 2 on bad arguments, 3 when
Elasticsearch is unavailable. Progress goes to stderr. Text output escapes control
characters of everything read from the store; ``--json`` output is JSON.
``--save-checkpoint FILE`` writes the newest trusted checkpoint after a clean run, for
the next ``--since``.

``prove EVENT_ID [--out FILE]`` writes an inclusion proof bundle (stdout by default) that
``otel-audit verify-proof FILE --public-key KEY`` checks offline.

Elasticsearch is ``--es-url`` or ``OTEL_AUDIT_ES_URL``. Without ``--public-key`` and
``--checkpoint-dir`` the development locations under ``integrity-state/`` (the
receiver's default ``integrity.state_dir``) are used when they exist.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch.serializer import OrjsonSerializer

from indexer.es_client import EsConnection, describe_error, sync_client
from otel_audit.exits import Exit

__all__ = ["register"]

_DEFAULT_STATE = "integrity-state"
_MAX_LISTED = 20


def _connection(args: argparse.Namespace) -> EsConnection:
    return EsConnection.from_env(url=args.es_url)


def _client(connection: EsConnection) -> Elasticsearch:
    return sync_client(
        connection, request_timeout=120, serializers={"application/json": OrjsonSerializer()}
    )


def _error(args: argparse.Namespace, message: str, code: Exit = Exit.USAGE) -> int:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps({"ok": False, "error": message}) + "\n")
    else:
        sys.stderr.write(f"otel-audit: error: {message}\n")
    return code


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL[ord("\\")] = "\\\\"


def printable(text: object) -> str:
    """``text`` with control characters (C0, DEL, C1) and backslashes escaped."""
    return str(text).translate(_CONTROL)


def _state_dir() -> Path:
    return Path(os.environ.get("OTEL_AUDIT_INTEGRITY__STATE_DIR", _DEFAULT_STATE))


def _progress(events: int, elapsed_s: float) -> None:
    rate = events / elapsed_s if elapsed_s else 0.0
    sys.stderr.write(f"verify: {events:,} events checked, {rate:,.0f}/s\n")
    sys.stderr.flush()


def _verify(args: argparse.Namespace) -> int:
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    from indexer.integrity.checkpoint_store import open_checkpoint_store
    from indexer.integrity.verify import VerifyOptions, verify
    from otel_audit.integrity import IntegrityError, Keyring
    from otel_audit.integrity.store import CheckpointStore

    keys = args.public_key or [str(_state_dir() / "keys")]
    try:
        keyring = Keyring.from_paths(keys)
    except IntegrityError as exc:
        return _error(args, f"{exc} (give --public-key)")
    if args.archive:
        from indexer.lifecycle.verify_cli import run_archive_verify

        return run_archive_verify(args, keyring)
    store: CheckpointStore | None = None
    location = args.checkpoint_dir or os.environ.get("OTEL_AUDIT_INTEGRITY__CHECKPOINT_DIR")
    if location is None and (_state_dir() / "checkpoints").is_dir():
        location = str(_state_dir() / "checkpoints")
    if location and location != "none":
        try:
            store = open_checkpoint_store(location)
        except (ValueError, ImportError, AttributeError) as exc:
            return _error(args, f"checkpoint store {location!r}: {exc}")
    since = None
    if args.since:
        from otel_audit.integrity import Checkpoint, CheckpointStatus, verify_checkpoint

        try:
            since = Checkpoint.from_json_dict(json.loads(Path(args.since).read_bytes()))
        except (OSError, ValueError, IntegrityError) as exc:
            return _error(args, f"--since {args.since}: {exc}")
        status = verify_checkpoint(since, keyring)
        if status is not CheckpointStatus.OK:
            return _error(args, f"--since {args.since}: checkpoint does not verify ({status})")
    options = VerifyOptions(
        chain_id=args.chain,
        time_from=args.time_from,
        time_to=args.time_to,
        grace_s=args.grace_s,
        seal_interval_s=args.seal_interval_s,
        heartbeat_s=args.heartbeat_s,
        seal_deadline_s=args.seal_deadline_s,
        stale_after_s=args.stale_after_s,
        max_wait_s=args.max_wait_s,
        since=since,
        # An incremental run reads little: starting reader processes would cost more.
        processes=since is None,
        progress=None if args.quiet else _progress,
    )
    try:
        connection = _connection(args)
    except ValueError as exc:
        return _error(args, str(exc))
    es = _client(connection)
    try:
        from indexer.lifecycle.verify_archive import PolicyDeletions

        # Indices the lifecycle policy removed (signed records) are archived, not missing.
        options.policy_deletions = PolicyDeletions.from_elasticsearch(es, keyring)
        report = verify(es, keyring, store, options)
    except (TransportError, ApiError) as exc:
        return _error(args, describe_error(exc, connection), Exit.UNAVAILABLE)
    finally:
        es.close()
    from indexer.integrity.witness_cli import witness_post_check

    witness_findings, problem = witness_post_check(args, location, keyring)
    if problem:
        return _error(args, problem)
    if args.json:
        data = report.to_json_dict()
        if args.witness_key:
            data["witness"] = {"ok": not witness_findings, "findings": witness_findings}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        _print_report(report)
        for finding in witness_findings:
            sys.stdout.write(f"UNCOSIGNED: {printable(finding['message'])}\n")
    if report.findings or witness_findings:
        return Exit.FINDINGS
    if args.save_checkpoint and report.anchors:
        chain = since.origin if since is not None else args.chain
        if chain is None and len(report.anchors) == 1:
            chain = next(iter(report.anchors))
        cp = report.anchors.get(chain) if chain else None
        if cp is None:
            return _error(args, "--save-checkpoint needs one chain (give --chain)")
        Path(args.save_checkpoint).write_text(json.dumps(cp.to_json_dict()) + "\n")
    return Exit.STALE if report.stale else Exit.OK


def _print_report(report: Any) -> None:
    out = sys.stdout.write
    data = report.to_json_dict()
    s = data["summary"]
    for warning in report.warnings:
        out(f"warning: {printable(warning)}\n")
    for chain_id, info in sorted(report.chains.items()):
        out(
            f"chain {printable(chain_id)}: {info['blocks']} blocks, last sequence "
            f"{info['last_sequence']}, tree size {info['tree_size']}, keys "
            f"{printable(', '.join(info['key_ids']))}\n"
        )
    for chain_id, why in sorted(report.stale.items()):
        out(f"STALE: chain {printable(chain_id)}: {printable(why)}\n")
    by_kind: dict[str, list[Any]] = {}
    for f in report.findings:
        by_kind.setdefault(str(f.kind), []).append(f)
    # Root causes first: a truncated chain explains the inserted events after it.
    order = [
        "truncated",
        "bad_signature",
        "unknown_key",
        "missing",
        "misplaced",
        "unreachable",
        "modified",
        "reordered",
        "inserted",
    ]
    for kind in sorted(by_kind, key=lambda k: order.index(k) if k in order else 99):
        items = by_kind[kind]
        out(f"\n{kind.upper()}: {len(items)}\n")
        causes = {f.cause for f in items if f.cause}
        for cause in sorted(causes):
            out(f"  cause: {printable(cause)}\n")
        for f in items[:_MAX_LISTED]:
            where = " ".join(
                p
                for p in (
                    f"event {printable(f.event_id)}" if f.event_id else "",
                    f"in {printable(f.index)}" if f.index else "",
                    f"[chain {printable(f.chain_id)} block {f.sequence}]"
                    if f.chain_id is not None and f.sequence is not None
                    else "",
                )
                if p
            )
            out(f"  - {where + ': ' if where else ''}{printable(f.message)}\n")
        if len(items) > _MAX_LISTED:
            out(f"  ... and {len(items) - _MAX_LISTED} more (--json lists all)\n")
    if s.get("events_archived"):
        out(
            f"\n{s['events_archived']} sealed events were removed from Elasticsearch by the "
            "lifecycle policy (signed records); verify them with --archive URL\n"
        )
    verdict = "TAMPERING DETECTED" if report.findings else "STALE" if report.stale else "CLEAN"
    out(
        f"\n{verdict}: {s['blocks_checked']} blocks, {s['events_checked']} events checked, "
        f"{s['events_pending']} not sealed yet, {sum(s['findings'].values())} findings "
        f"in {s['elapsed_s']:.1f} s ({s['events_per_s']:,.0f} events/s)\n"
    )


def _prove(args: argparse.Namespace) -> int:
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    from indexer.integrity.prove import ProveError, prove

    try:
        connection = _connection(args)
    except ValueError as exc:
        return _error(args, str(exc))
    es = _client(connection)
    try:
        bundle = prove(es, args.event_id)
    except ProveError as exc:
        return _error(args, str(exc), Exit.FINDINGS)
    except (TransportError, ApiError) as exc:
        return _error(args, describe_error(exc, connection), Exit.UNAVAILABLE)
    finally:
        es.close()
    text = json.dumps(bundle.to_json_dict(), indent=2, sort_keys=True) + "\n"
    if args.out in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        sys.stderr.write(
            f"wrote inclusion proof of event {args.event_id} (leaf {bundle.leaf_index} of "
            f"{bundle.tree_size}, chain {bundle.checkpoint.origin}) to {args.out}\n"
        )
    return Exit.OK


def register(subparsers: Any) -> None:
    """Add the ``verify`` and ``prove`` sub-commands."""
    v = subparsers.add_parser(
        "verify", help="check blocks, checkpoints and events for tampering (exit 0 = clean)"
    )
    v.add_argument(
        "--from", dest="time_from", metavar="TIME", help="events with @timestamp >= TIME"
    )
    v.add_argument("--to", dest="time_to", metavar="TIME", help="events with @timestamp <= TIME")
    v.add_argument("--chain", metavar="ID", help="only this chain's blocks")
    v.add_argument(
        "--public-key",
        action="append",
        metavar="KEY",
        help="public key PEM file or directory; repeat for rotated keys",
    )
    v.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="external checkpoint store (directory or module:factory=ARG; 'none' to skip)",
    )
    from indexer.integrity.verify import (
        DEFAULT_GRACE_S,
        DEFAULT_HEARTBEAT_S,
        DEFAULT_SEAL_INTERVAL_S,
    )

    v.add_argument(
        "--grace-s",
        type=float,
        default=DEFAULT_GRACE_S,
        help="slack added to the seal interval and the heartbeat (default %(default)s)",
    )
    v.add_argument(
        "--seal-interval-s",
        type=float,
        default=DEFAULT_SEAL_INTERVAL_S,
        help="the receivers' integrity.block_max_interval_ms in seconds (default %(default)s)",
    )
    v.add_argument(
        "--heartbeat-s",
        type=float,
        default=DEFAULT_HEARTBEAT_S,
        help="the receivers' integrity.heartbeat_interval_s (default %(default)s)",
    )
    v.add_argument(
        "--seal-deadline-s",
        type=float,
        metavar="S",
        help="an event must be sealed by a trusted block this long after verify first "
        "reads it, else it is inserted (default seal interval + grace)",
    )
    v.add_argument(
        "--stale-after-s",
        type=float,
        metavar="S",
        help="a chain whose newest trusted checkpoint is older is stale, exit 4 "
        "(default heartbeat + grace; 0 turns the check off)",
    )
    v.add_argument(
        "--max-wait-s",
        type=float,
        metavar="S",
        help="wait at most this long for the sealing deadline of unsealed events "
        "(default the whole deadline; those still before it are reported pending)",
    )
    v.add_argument(
        "--since",
        metavar="CHECKPOINT_FILE",
        help="a checkpoint verified before: check only what its chain added since",
    )
    v.add_argument(
        "--save-checkpoint",
        metavar="FILE",
        help="after a run without findings, write the newest trusted checkpoint here",
    )
    v.add_argument("--es-url", help="Elasticsearch URL (default OTEL_AUDIT_ES_URL)")
    from indexer.lifecycle.verify_cli import add_arguments as add_archive_arguments

    add_archive_arguments(v)
    from indexer.integrity.witness_cli import add_verify_arguments as add_witness_arguments

    add_witness_arguments(v)
    v.add_argument("--quiet", action="store_true", help="no progress on stderr")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(handler=_verify)

    p = subparsers.add_parser("prove", help="write an offline inclusion proof for one event")
    p.add_argument("event_id", metavar="EVENT_ID")
    p.add_argument("--out", metavar="FILE", help="output file (default stdout)")
    p.add_argument("--es-url", help="Elasticsearch URL (default OTEL_AUDIT_ES_URL)")
    p.add_argument("--json", action="store_true", help="errors as JSON")
    p.set_defaults(handler=_prove)
