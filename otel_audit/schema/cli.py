"""``otel-audit schema``: show the audit schema and its generated reference.

``show`` prints the schema (``--json``: the schema file as is), ``docs`` prints or
``--write``s ``docs/schema.md`` (``--check`` exits 1 when the file is stale). The index
templates derived from it: ``otel-audit templates show``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from otel_audit.exits import Exit
from otel_audit.schema import load_schema

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``schema show|docs`` to the ``otel-audit`` command line."""
    parser = subparsers.add_parser("schema", help="show the audit schema and what derives from it")
    sub = parser.add_subparsers(dest="schema_command", metavar="SUBCOMMAND", required=True)

    show = sub.add_parser("show", help="print the schema's fields")
    show.add_argument("--json", action="store_true", help="print the schema file as JSON")
    show.set_defaults(handler=_show)

    docs = sub.add_parser("docs", help="generate the Markdown schema reference")
    docs.add_argument("--write", action="store_true", help="write it to --output")
    docs.add_argument("--check", action="store_true", help="exit 1 when --output is stale")
    docs.add_argument(
        "--output", type=Path, default=None, help="file to write or check (default docs/schema.md)"
    )
    docs.set_defaults(handler=_docs)


def _show(args: argparse.Namespace) -> int:
    schema = load_schema()
    if args.json:
        print(json.dumps(schema.raw, indent=2, ensure_ascii=False))
        return 0
    print(f"{schema.name} v{schema.version} (marker attribute {schema.marker_attribute})")
    names = [f.attribute for f in schema.fields] + [r.attribute for r in schema.resource_fields]
    width = max(len(name) for name in names)
    for f in schema.fields:
        rule = "one of " + "|".join(f.enum) if f.enum else f"<= {f.max_bytes} bytes"
        print(f"  {f.attribute:<{width}}  {f.required:<19}  {f.param:<14}  {rule}")
    print("resource:")
    for rf in schema.resource_fields:
        print(f"  {rf.attribute:<{width}}  {rf.required}")
    return 0


def _docs(args: argparse.Namespace) -> int:
    from otel_audit.schema.docs import DOCS_PATH, REGENERATE, render

    text = render()
    path: Path = args.output or DOCS_PATH
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is stale; regenerate it with `{REGENERATE}`", file=sys.stderr)
            return Exit.FINDINGS
        return 0
    if args.write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
        return 0
    sys.stdout.write(text)
    return 0
