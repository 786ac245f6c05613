"""``otel-audit templates install|show``: the Elasticsearch index templates.

``install`` creates or updates every template (events, dead letters, spans, block
records) on the cluster at ``--url`` (default OTEL_AUDIT_ES_URL). Run it before the
receiver writes its first event, so new daily indices get the mapping. ``show`` prints
the templates and their fields without touching a cluster.

Exit codes: 0 ok, 1 failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from indexer.es_client import ENV_KEYS, EsConnection, describe_error, sync_client
from indexer.templates import install_templates, registered_templates
from otel_audit.exits import Exit

__all__ = ["register"]

ENV_ES_URL = ENV_KEYS["url"]


def register(subparsers: Any) -> None:
    """Add the ``templates`` command to the top-level parser."""
    parser = subparsers.add_parser(
        "templates",
        help="install or show the Elasticsearch index templates",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="templates_action", metavar="ACTION", required=True)
    install = actions.add_parser("install", help="create or update every index template")
    install.add_argument("--url", help=f"Elasticsearch URL (default ${ENV_ES_URL})")
    install.add_argument("--json", action="store_true", help="print the result as JSON")
    install.set_defaults(handler=_install)
    show = actions.add_parser("show", help="print the index templates")
    show.add_argument("--json", action="store_true", help="print the full bodies as JSON")
    show.set_defaults(handler=_show)


def _fail(args: argparse.Namespace, message: str, code: Exit) -> int:
    if args.json:
        sys.stdout.write(json.dumps({"ok": False, "error": message}) + "\n")
    sys.stderr.write(f"otel-audit templates: {message}\n")
    return code


def _install(args: argparse.Namespace) -> int:
    from elasticsearch import exceptions as es_exceptions

    try:
        connection = EsConnection.from_env(url=args.url)
    except ValueError as exc:
        return _fail(args, str(exc), Exit.USAGE)
    url = connection.cloud_id or connection.url
    client = sync_client(connection, request_timeout=30)
    try:
        names = install_templates(client)
    except (es_exceptions.ApiError, es_exceptions.TransportError) as exc:
        message = f"installing templates failed: {describe_error(exc, connection)}"
        return _fail(args, message, Exit.UNAVAILABLE)
    finally:
        client.close()
    if args.json:
        sys.stdout.write(json.dumps({"ok": True, "url": url, "installed": names}) + "\n")
    else:
        for name in names:
            sys.stdout.write(f"installed {name}\n")
    return 0


def _show(args: argparse.Namespace) -> int:
    templates = registered_templates()
    if args.json:
        sys.stdout.write(json.dumps(templates, indent=2, sort_keys=True) + "\n")
        return 0
    for name, body in templates.items():
        patterns = ", ".join(body.get("index_patterns", []))
        sys.stdout.write(f"{name}: {patterns}\n")
        props = body.get("template", {}).get("mappings", {}).get("properties", {})
        for path, kind in _leaves(props):
            sys.stdout.write(f"  {path:<32} {kind}\n")
    return 0


def _leaves(props: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in sorted(props.items()):
        path = f"{prefix}{key}"
        if "properties" in value:
            out.extend(_leaves(value["properties"], path + "."))
        else:
            out.append((path, str(value.get("type", "object"))))
    return out
