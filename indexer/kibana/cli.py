"""``otel-audit kibana import|render``: the Kibana data views, searches and dashboard.

``import`` sends the saved objects (built in, or ``--file``) to Kibana's import API with
``overwrite=true`` and prints one line per object; it exits 1 when any object or the
request failed. Credentials: ``--user`` (or OTEL_AUDIT_KIBANA_USER) with ``--password``
(or OTEL_AUDIT_KIBANA_PASSWORD), or ``--api-key`` (or OTEL_AUDIT_KIBANA_API_KEY); a Kibana
whose HTTPS certificate comes from a private CA needs ``--ca-file`` (or
OTEL_AUDIT_KIBANA_CA_FILE); the URL may come from OTEL_AUDIT_KIBANA_URL. ``render`` writes
the NDJSON (``kibana/otel-audit.ndjson`` in the repository is its output) or, with
``--check``, exits 1 when a file differs from it.

Exit codes: 0 ok, 1 failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from indexer.kibana.client import (
    ImportReport,
    KibanaAuth,
    KibanaError,
    import_saved_objects,
    wait_until_available,
)
from indexer.kibana.objects import render_ndjson
from otel_audit.exits import Exit

__all__ = ["ENV_API_KEY", "ENV_PASSWORD", "ENV_URL", "register"]

ENV_URL = "OTEL_AUDIT_KIBANA_URL"
ENV_PASSWORD = "OTEL_AUDIT_KIBANA_PASSWORD"
ENV_API_KEY = "OTEL_AUDIT_KIBANA_API_KEY"
ENV_USER = "OTEL_AUDIT_KIBANA_USER"
ENV_CA_FILE = "OTEL_AUDIT_KIBANA_CA_FILE"


STATUS_POLL_INTERVAL_S = 2.0
"""Pause between /api/status polls while waiting for Kibana (--wait-s)."""


def register(subparsers: Any) -> None:
    """Add the ``kibana`` command to the top-level parser."""
    parser = subparsers.add_parser(
        "kibana",
        help="import the otel-audit data views, searches and dashboard into Kibana",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="kibana_action", metavar="ACTION", required=True)

    imp = actions.add_parser("import", help="import the saved objects (overwrite=true)")
    imp.add_argument("--url", help=f"Kibana base URL (default ${ENV_URL})")
    imp.add_argument("--space", help="Kibana space id (default: the default space)")
    imp.add_argument("--user", help=f"basic-auth user (default ${ENV_USER})")
    imp.add_argument(
        "--ca-file",
        help=f"PEM of the CA behind Kibana's HTTPS certificate (default ${ENV_CA_FILE})",
    )
    imp.add_argument("--password", help=f"basic-auth password (default ${ENV_PASSWORD})")
    imp.add_argument("--api-key", help=f"API key, base64 id:key (default ${ENV_API_KEY})")
    imp.add_argument(
        "--file", help="NDJSON to import instead of the built-in objects (- for stdin)"
    )
    imp.add_argument(
        "--wait-s",
        type=float,
        default=0.0,
        help="wait up to this many seconds for Kibana to become available first (default 0)",
    )
    imp.add_argument(
        "--timeout-s", type=float, default=60.0, help="import request timeout (default 60)"
    )
    imp.add_argument("--json", action="store_true", help="print the result as JSON")
    imp.set_defaults(handler=_import)

    render = actions.add_parser("render", help="write the saved objects as NDJSON")
    render.add_argument("--output", "-o", help="file to write (default stdout)")
    render.add_argument(
        "--check",
        metavar="FILE",
        help="do not write; exit 1 when FILE differs from the rendered objects",
    )
    render.add_argument("--json", action="store_true", help="print the result as JSON")
    render.set_defaults(handler=_render)


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(text)


def _fail(args: argparse.Namespace, message: str, code: int = Exit.FINDINGS) -> int:
    if args.json:
        sys.stdout.write(json.dumps({"ok": False, "error": message}, indent=2) + "\n")
    sys.stderr.write(f"otel-audit kibana: {message}\n")
    return code


def _auth(args: argparse.Namespace) -> KibanaAuth:
    api_key = args.api_key or os.environ.get(ENV_API_KEY) or None
    user = args.user or os.environ.get(ENV_USER) or None
    ca_file = args.ca_file or os.environ.get(ENV_CA_FILE) or None
    if ca_file and not os.path.isfile(ca_file):
        raise ValueError(f"--ca-file {ca_file!r} is not a readable file")
    if api_key and user:
        raise ValueError("give either --user/--password or --api-key, not both")
    if args.password is not None and not user:
        raise ValueError("--password needs --user")
    if not user:
        return KibanaAuth(api_key=api_key, ca_file=ca_file)
    password = args.password if args.password is not None else os.environ.get(ENV_PASSWORD)
    return KibanaAuth(user=user, password=password, ca_file=ca_file)


def _read_objects(path: str | None) -> bytes:
    if path is None:
        return render_ndjson().encode("utf-8")
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(obj, dict) or "type" not in obj or "id" not in obj:
            raise ValueError(f"{path}:{number}: not a saved object (needs type and id)")
    return data


def _report_text(report: ImportReport) -> str:
    lines = []
    for obj in report.objects:
        status = "ok   " if obj.ok else "ERROR"
        title = f" ({obj.title})" if obj.title else ""
        error = f": {obj.error}" if not obj.ok else ""
        lines.append(f"{status} {obj.type} {obj.id}{title}{error}\n")
    for warning in report.warnings:
        lines.append(f"warning: {warning}\n")
    verdict = "imported" if report.ok else "import FAILED"
    lines.append(
        f"{verdict}: {len(report.objects) - report.error_count} ok, {report.error_count} failed\n"
    )
    return "".join(lines)


def _import(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get(ENV_URL)
    if not url:
        return _fail(args, f"--url is required (or set {ENV_URL})", Exit.USAGE)
    if not url.startswith(("http://", "https://")):
        return _fail(args, f"--url {url!r} must start with http:// or https://", Exit.USAGE)
    try:
        auth = _auth(args)
        ndjson = _read_objects(args.file)
    except OSError as exc:
        return _fail(args, f"cannot read {args.file}: {exc.strerror or exc}", Exit.USAGE)
    except ValueError as exc:
        return _fail(args, str(exc), Exit.USAGE)

    def progress(message: str) -> None:
        sys.stderr.write(message + "\n")

    async def run() -> ImportReport:
        if args.wait_s > 0:
            await wait_until_available(
                url,
                auth=auth,
                timeout_s=args.wait_s,
                interval_s=STATUS_POLL_INTERVAL_S,
                progress=progress,
            )
        return await import_saved_objects(
            url, ndjson, space=args.space, auth=auth, timeout_s=args.timeout_s
        )

    try:
        report = asyncio.run(run())
    except KibanaError as exc:
        return _fail(args, str(exc))
    _emit(args, report.to_json_dict(), _report_text(report))
    return Exit.OK if report.ok else Exit.FINDINGS


def _render(args: argparse.Namespace) -> int:
    text = render_ndjson()
    if args.check:
        try:
            current = Path(args.check).read_text(encoding="utf-8")
        except OSError as exc:
            return _fail(args, f"cannot read {args.check}: {exc.strerror or exc}")
        fresh = current == text
        message = "up to date" if fresh else "stale: run 'otel-audit kibana render -o FILE'"
        _emit(args, {"ok": fresh, "file": args.check}, f"{args.check}: {message}\n")
        return Exit.OK if fresh else Exit.FINDINGS
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        count = text.count("\n")
        _emit(
            args,
            {"ok": True, "file": args.output, "objects": count},
            f"wrote {count} saved objects to {args.output}\n",
        )
    else:
        sys.stdout.write(text)
    return Exit.OK
