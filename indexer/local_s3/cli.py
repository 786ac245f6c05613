"""``otel-audit local-s3 start|stop|status``: the local S3 server (s3proxy).

Flags override the environment (OTEL_AUDIT_S3_URL, OTEL_AUDIT_LOCAL_S3_DATA,
OTEL_AUDIT_CACHE_DIR). ``start --bucket NAME`` also creates a bucket. Progress goes to
stderr; ``--json`` prints one JSON object on stdout. Exit codes: 0 ok, 2 bad settings,
3 failed or (``status``) stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from indexer.local_s3.config import LocalS3Config, LocalS3ConfigError
from indexer.local_s3.manager import LocalS3, LocalS3Error
from otel_audit.exits import Exit

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``local-s3`` command to the top-level parser."""
    parser = subparsers.add_parser(
        "local-s3",
        help="start, stop or inspect the local S3 server (cold archive for development)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="local_s3_action", metavar="ACTION", required=True)
    for name, handler, text in (
        ("start", _start, "start the server (or reuse one) and wait until it answers"),
        ("stop", _stop, "stop the server started by this command"),
        ("status", _status, "report running/stopped and pid"),
    ):
        sub = actions.add_parser(name, help=text, description=text)
        sub.add_argument("--url", help="server URL (default $OTEL_AUDIT_S3_URL or :9290)")
        sub.add_argument("--data-dir", help="server directory (default <cache>/servers/<port>)")
        sub.add_argument("--json", action="store_true", help="print the result as JSON")
        if name == "start":
            sub.add_argument("--bucket", action="append", default=[], help="create this bucket")
        sub.set_defaults(handler=handler)


def _server(args: argparse.Namespace) -> LocalS3:
    return LocalS3(config=LocalS3Config.from_env(url=args.url, data_dir=args.data_dir))


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, sort_keys=True) if args.json else text)


def _fail(args: argparse.Namespace, exc: Exception) -> int:
    if args.json:
        print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)}))
    print(f"local-s3: error: {exc}", file=sys.stderr)
    return Exit.USAGE if isinstance(exc, LocalS3ConfigError) else Exit.UNAVAILABLE


def _start(args: argparse.Namespace) -> int:
    try:
        server = _server(args)
        started = server.ensure_started()
        for bucket in args.bucket:
            server.ensure_bucket(bucket)
    except (LocalS3Error, LocalS3ConfigError) as exc:
        return _fail(args, exc)
    verb = "started" if started else "reused"
    _emit(
        args,
        {"ok": True, "started": started, **server.status().to_dict()},
        f"{verb} the S3 server at {server.url}",
    )
    return Exit.OK


def _stop(args: argparse.Namespace) -> int:
    try:
        server = _server(args)
        stopped = server.stop()
    except (LocalS3Error, LocalS3ConfigError) as exc:
        return _fail(args, exc)
    text = f"stopped {server.url}" if stopped else f"nothing to stop at {server.url}"
    _emit(args, {"ok": True, "stopped": stopped, "url": server.url}, text)
    return Exit.OK


def _status(args: argparse.Namespace) -> int:
    try:
        status = _server(args).status()
    except (LocalS3Error, LocalS3ConfigError) as exc:
        return _fail(args, exc)
    if status.running:
        who = status.pid if status.pid is not None else "- (not started by otel-audit)"
        text = f"running: {status.url} pid {who}"
    else:
        text = f"stopped: {status.url}" + (f" ({status.detail})" if status.detail else "")
    _emit(args, {"ok": True, **status.to_dict()}, text)
    return Exit.OK if status.running else Exit.UNAVAILABLE
