"""``otel-audit query``, ``trace``, ``query-api`` and ``tokens``.

``query`` and ``trace`` are clients of the HTTP API (``--api-url``, default
``$OTEL_AUDIT_API_URL`` or ``http://127.0.0.1:8080``; ``--token`` or
``$OTEL_AUDIT_API_TOKEN``): the API is the one place that checks tokens and records every
query as an audit event, so the CLI never reads Elasticsearch directly. ``query-api`` runs
the API on its own; ``tokens hash`` prints the SHA-256 to put in the config.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from indexer.query.auth import generate_token, hash_token
from indexer.query.filters import FILTER_PARAMS
from otel_audit.exits import Exit

__all__ = ["escape_control", "register"]

DEFAULT_API_URL = "http://127.0.0.1:8080"


def escape_control(text: str) -> str:
    """Control characters (and DEL, and the C1 set) as visible escapes, so stored values
    can neither forge table rows nor drive the terminal."""
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0 or ch in "\u2028\u2029":
            out.append(
                {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(
                    ch, f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
                )
            )
        else:
            out.append(ch)
    return "".join(out)


class ApiError(Exception):
    """The API answered with an error (``status`` 0: it could not be reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def exit_code(self) -> Exit:
        """A refused request is the caller's to fix (usage); the rest is unavailability."""
        if self.status in (400, 404, 422):
            return Exit.USAGE
        return Exit.UNAVAILABLE


def _get(args: argparse.Namespace, path: str, params: list[tuple[str, str]]) -> Any:
    url = args.api_url.rstrip("/") + "/api/v1" + path
    if params:
        url += "?" + urllib.parse.urlencode(params)
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    token = args.token or os.environ.get("OTEL_AUDIT_API_TOKEN", "")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except Exception:
            message = exc.reason
        raise ApiError(exc.code, f"HTTP {exc.code}: {message}") from None
    except urllib.error.URLError as exc:
        raise ApiError(0, f"cannot reach the query API at {args.api_url}: {exc.reason}") from None


def _add_client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-url",
        default=os.environ.get("OTEL_AUDIT_API_URL", DEFAULT_API_URL),
        help="query API base URL (default: $OTEL_AUDIT_API_URL or %(default)s)",
    )
    parser.add_argument("--token", default="", help="bearer token (default: $OTEL_AUDIT_API_TOKEN)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def register(subparsers: Any) -> None:
    """Add ``query``, ``trace``, ``query-api`` and ``tokens``."""
    q = subparsers.add_parser(
        "query",
        help="search audit events through the query API",
        description="Search audit events, newest first. Repeat a filter flag to match any "
        "of several values.",
    )
    for p in FILTER_PARAMS:
        flag = "--text" if p.name == "q" else "--" + p.name.replace("_", "-")
        q.add_argument(
            flag,
            dest=f"f_{p.name}",
            action="append" if p.repeatable else "store",
            metavar=p.name.upper(),
            help=p.description.replace("%", "%%") + (f" Example: {p.example}" if p.example else ""),
        )
    q.add_argument("--limit", type=int, default=None, help="events per page (API default 100)")
    q.add_argument("--all", action="store_true", help="follow cursors to the last page")
    _add_client_args(q)
    q.set_defaults(handler=_query)

    t = subparsers.add_parser(
        "trace",
        help="show a trace as a timeline with its audit events",
        description="A trace's spans as an indented tree with durations, and each audit "
        "event under the span it happened in.",
    )
    t.add_argument("trace_id", help="32 hex digits")
    _add_client_args(t)
    t.set_defaults(handler=_trace)

    tok = subparsers.add_parser("tokens", help="query API tokens")
    tsub = tok.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    h = tsub.add_parser("hash", help="print the SHA-256 of a token (read from stdin or prompted)")
    h.set_defaults(handler=_tokens_hash)
    g = tsub.add_parser("generate", help="make a new token and its config entry")
    g.add_argument("--subject", required=True, help="who will hold it")
    g.add_argument("--role", action="append", default=None, help="reader (default), stats or admin")
    g.set_defaults(handler=_tokens_generate)


def _filter_params(args: argparse.Namespace) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for p in FILTER_PARAMS:
        value = getattr(args, f"f_{p.name}")
        if value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            params.append((p.name, v))
    return params


_COLUMNS = (
    ("time", lambda e: e.get("@timestamp", "")[:23] + "Z"),
    ("action", lambda e: e.get("event", {}).get("action", "")),
    ("outcome", lambda e: e.get("audit", {}).get("outcome", "")),
    ("actor", lambda e: e.get("user", {}).get("id", "")),
    (
        "resource",
        lambda e: "{}/{}".format(
            e.get("audit", {}).get("resource", {}).get("type", ""),
            e.get("audit", {}).get("resource", {}).get("id", ""),
        ).strip("/"),
    ),
    ("service", lambda e: e.get("service", {}).get("name", "")),
    ("trace", lambda e: e.get("trace", {}).get("id", "")),
    ("event id", lambda e: e.get("event", {}).get("id", "")),
)


def _table(events: list[dict[str, Any]], header: bool) -> str:
    rows = [[escape_control(str(f(e))) for _, f in _COLUMNS] for e in events]
    widths = [len(name) for name, _ in _COLUMNS]
    for row in rows:
        widths = [min(max(w, len(c)), 64) for w, c in zip(widths, row, strict=True)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            (c if len(c) <= w else c[: w - 1] + "…").ljust(w)
            for c, w in zip(cells, widths, strict=True)
        ).rstrip()

    lines = [fmt([n for n, _ in _COLUMNS])] if header else []
    lines.extend(fmt(r) for r in rows)
    return "\n".join(lines)


def _query(args: argparse.Namespace) -> int:
    params = _filter_params(args)
    if args.limit is not None:
        params.append(("limit", str(args.limit)))
    total = 0
    first = True
    try:
        page = _get(args, "/events", params)
        while True:
            events = page["events"]
            total += len(events)
            if args.json:
                for e in events:
                    sys.stdout.write(json.dumps(e, ensure_ascii=False) + "\n")
            elif events or first:
                print(_table(events, header=first))
            first = False
            cursor = page.get("next_cursor")
            if not args.all or not cursor:
                if cursor and not args.json:
                    print("(more: use --all)", file=sys.stderr)
                break
            print(f"query: {total} events so far...", file=sys.stderr, flush=True)
            nxt = [("cursor", cursor)]
            if args.limit is not None:
                nxt.append(("limit", str(args.limit)))
            page = _get(args, "/events", nxt)
    except ApiError as exc:
        print(f"query: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.all:
        print(f"query: {total} events", file=sys.stderr)
    return 0


def _ms(ns: int) -> str:
    ms = ns / 1e6
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _event_line(e: dict[str, Any]) -> str:
    res = e.get("audit", {}).get("resource", {})
    resource = f"{res.get('type', '')}/{res.get('id', '')}".strip("/")
    return escape_control(
        f"{e.get('@timestamp', '')[11:23]}  {e.get('event', {}).get('action', '')} "
        f"[{e.get('audit', {}).get('outcome', '')}] by {e.get('user', {}).get('id', '')}"
        + (f" on {resource}" if resource else "")
        + f"  ({e.get('event', {}).get('id', '')})"
    )


def render_trace(view: dict[str, Any]) -> str:
    """The terminal timeline of a trace view."""
    lines = [
        escape_control(
            f"trace {view['trace_id']}  services: {', '.join(view['services']) or '-'}  "
            f"spans: {view['span_count']}  audit events: {view['event_count']}"
        )
    ]

    def walk(node: dict[str, Any], depth: int) -> None:
        s = node["span"]
        pad = "  " * depth
        status = s.get("status", {}).get("code", "unset")
        flag = "" if status != "error" else "  ERROR"
        missing = "  (parent not stored)" if s.get("missing_parent") else ""
        lines.append(
            escape_control(
                f"{pad}├─ {s['name']}  [{s['service']}, {s['kind']}]  "
                f"{_ms(int(s.get('duration_ns') or 0))}  {s['start'][11:23]}{flag}{missing}"
            )
        )
        for e in node["events"]:
            lines.append(f"{pad}│    ● {_event_line(e)}")
        for child in node["children"]:
            walk(child, depth + 1)

    for root in view["roots"]:
        walk(root, 0)
    if view["unattached"]:
        lines.append("audit events whose span is not stored:")
        lines.extend(f"     ● {_event_line(e)}" for e in view["unattached"])
    if view.get("truncated", {}).get("spans") or view.get("truncated", {}).get("events"):
        lines.append("(truncated: the trace is larger than the API returns)")
    return "\n".join(lines)


def _trace(args: argparse.Namespace) -> int:
    try:
        view = _get(args, f"/traces/{urllib.parse.quote(args.trace_id, safe='')}", [])
    except ApiError as exc:
        print(f"trace: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(view, ensure_ascii=False, indent=2))
    else:
        print(render_trace(view))
    return 0


def _tokens_hash(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        token = getpass.getpass("token: ")
    else:
        token = sys.stdin.readline().rstrip("\r\n")
    if not token:
        print("tokens hash: empty token", file=sys.stderr)
        return Exit.USAGE
    print(hash_token(token))
    return 0


def _tokens_generate(args: argparse.Namespace) -> int:
    from indexer.query.config import ROLES

    roles = args.role or ["reader"]
    bad = sorted(set(roles) - ROLES)
    if bad:
        print(f"tokens generate: unknown role(s) {', '.join(bad)}", file=sys.stderr)
        return Exit.USAGE
    token = generate_token()
    print(f"token (give it to {args.subject}; it is not stored anywhere): {token}", file=sys.stderr)
    entry = {"subject": args.subject, "sha256": hash_token(token), "roles": roles}
    print("# add under query.tokens:")
    print(f"- {json.dumps(entry)}")
    return 0
