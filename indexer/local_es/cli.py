"""``otel-audit local-es start|stop|status``: the local Elasticsearch node or cluster.

Flags override the environment (OTEL_AUDIT_ES_URL, OTEL_AUDIT_LOCAL_ES_DATA,
OTEL_AUDIT_LOCAL_ES_HEAP, OTEL_AUDIT_LOCAL_ES_NODES, OTEL_AUDIT_CACHE_DIR). ``--nodes 3``
runs a three-node cluster on the URL's port and the next two; ``stop`` and ``status``
find every node of it by themselves. ``--secure`` (or an https:// URL) runs the secured
mode: HTTPS with a CA made for it, the ``elastic`` user's password in
``<dir>/security/elastic.password``. Progress goes to stderr; ``--json`` prints one JSON
object on stdout. Exit codes: 0 ok, 2 bad settings, 3 unavailable (failed to start or
stop, or ``status`` finds the node stopped).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from indexer.local_es.manager import (
    LocalElasticsearch,
    LocalEsConfig,
    LocalEsConfigError,
    LocalEsError,
)
from otel_audit.exits import Exit

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``local-es`` command to the top-level parser."""
    parser = subparsers.add_parser(
        "local-es",
        help="start, stop or inspect the local Elasticsearch node",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="local_es_action", metavar="ACTION", required=True)
    for name, handler, text in (
        ("start", _start, "start the node (or reuse a healthy one) and wait for health"),
        ("stop", _stop, "stop the node started by this command"),
        ("status", _status, "report running/stopped, pid, version and health"),
    ):
        sub = actions.add_parser(name, help=text, description=text)
        _add_common(sub)
        if name == "start":
            sub.add_argument(
                "--timeout-s",
                type=float,
                default=None,
                help="seconds to wait for yellow health (default 120, env "
                "OTEL_AUDIT_LOCAL_ES_START_TIMEOUT_S)",
            )
        if name == "stop":
            sub.add_argument(
                "--timeout-s",
                type=float,
                default=None,
                help="seconds between SIGTERM and SIGKILL (default 30)",
            )
        sub.set_defaults(handler=handler)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="node URL (default $OTEL_AUDIT_ES_URL or :9200)")
    parser.add_argument(
        "--data-dir",
        help="node directory (default $OTEL_AUDIT_LOCAL_ES_DATA or <cache>/nodes/<port>)",
    )
    parser.add_argument("--heap", help="JVM heap, e.g. 512m (default $OTEL_AUDIT_LOCAL_ES_HEAP)")
    parser.add_argument("--cache-dir", help="download cache (default $OTEL_AUDIT_CACHE_DIR)")
    parser.add_argument(
        "--nodes",
        type=int,
        help="nodes of the cluster on consecutive ports (default $OTEL_AUDIT_LOCAL_ES_NODES, "
        "or what the directory holds, else 1)",
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="the secured mode: HTTPS, passwords, file users (same as an https:// URL)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _manager(args: argparse.Namespace, *, start: bool) -> LocalElasticsearch:
    timeout = getattr(args, "timeout_s", None)
    config = LocalEsConfig.from_env(
        url=args.url,
        data_dir=args.data_dir,
        heap=args.heap,
        cache_dir=args.cache_dir,
        start_timeout_s=timeout if start else None,
        stop_timeout_s=None if start else timeout,
        nodes=args.nodes,
        secure=args.secure,
    )
    return LocalElasticsearch(config=config)


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(payload, sort_keys=True))
    else:
        print(text)


def _fail(args: argparse.Namespace, exc: LocalEsError) -> int:
    code = Exit.USAGE if isinstance(exc, LocalEsConfigError) else Exit.UNAVAILABLE
    if args.json:
        print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)}))
    print(f"local-es: error: {exc}", file=sys.stderr)
    return code


def _start(args: argparse.Namespace) -> int:
    try:
        node = _manager(args, start=True)
        started = node.ensure_started()
        status = node.status()
    except LocalEsError as exc:
        return _fail(args, exc)
    verb = "started" if started else "reused"
    text = f"{verb} Elasticsearch {status.version} at {status.url} (health {status.health})"
    if status.nodes > 1:
        text += f", {status.joined} of {status.nodes} nodes: " + ", ".join(
            m.url for m in status.members
        )
    if status.secure:
        text += (
            f"\nsecured: CA {status.ca_file}, user elastic, password in "
            f"{node.security.elastic_password_file}"
        )
    _emit(args, {"ok": True, "started": started, **status.to_dict()}, text)
    return 0


def _stop(args: argparse.Namespace) -> int:
    try:
        node = _manager(args, start=False)
        stopped = node.stop()
    except LocalEsError as exc:
        return _fail(args, exc)
    text = f"stopped {node.url}" if stopped else f"nothing to stop at {node.url}"
    _emit(args, {"ok": True, "stopped": stopped, "url": node.url}, text)
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        status = _manager(args, start=False).status()
    except LocalEsError as exc:
        return _fail(args, exc)
    if status.running:
        text = (
            f"running: {status.url} version {status.version} health {status.health} "
            f"pid {status.pid if status.pid is not None else '- (not started by otel-audit)'}"
        )
        for member in status.members:
            state = "running" if member.running else "stopped"
            text += f"\n  {member.name} {member.url} {state} pid {member.pid or '-'}"
    else:
        text = f"stopped: {status.url}" + (f" ({status.detail})" if status.detail else "")
    _emit(args, {"ok": True, **status.to_dict()}, text)
    return Exit.OK if status.running else Exit.UNAVAILABLE
