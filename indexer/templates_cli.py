"""``otel-audit templates install|show``: the Elasticsearch index templates.

``install`` creates or updates every template (events, dead letters, spans, block
records) on the cluster at ``--url`` (default OTEL_AUDIT_ES_URL; credentials and CA from
the other OTEL_AUDIT_ES_* variables). Run it before the receiver writes its first event,
so new daily indices get the mapping. Shards, replicas and refresh interval come from
``--shards`` / ``--replicas`` / ``--refresh-interval-s`` or OTEL_AUDIT_SHARDS,
OTEL_AUDIT_REPLICAS, OTEL_AUDIT_REFRESH_INTERVAL_S (the receiver's keys). A template on
the cluster that is newer than this release or was changed by hand is not overwritten:
it is named and the command exits 1, unless ``--force``. ``show`` prints the templates
and their fields without touching a cluster.

Exit codes: 0 ok, 1 refused (newer or changed template), 2 usage, 3 Elasticsearch
unavailable or refused the credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from types import SimpleNamespace
from typing import Any

from indexer.es_client import ENV_KEYS, EsConnection, describe_error, sync_client
from indexer.mappings import template_settings_of
from indexer.templates import TemplateConflict, install_templates, registered_templates
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
    install.add_argument(
        "--force",
        action="store_true",
        help="overwrite templates that are newer or were changed on the cluster",
    )
    install.add_argument(
        "--shards", type=int, default=None, help="primary shards (default $OTEL_AUDIT_SHARDS or 1)"
    )
    install.add_argument(
        "--replicas",
        default=None,
        help='a count or a range like "0-1" (default $OTEL_AUDIT_REPLICAS or 0-1)',
    )
    install.add_argument(
        "--refresh-interval-s",
        type=float,
        default=None,
        help="refresh interval in seconds (default $OTEL_AUDIT_REFRESH_INTERVAL_S or 1)",
    )
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
        settings = template_settings_of(_settings_source(args))
    except ValueError as exc:
        return _fail(args, str(exc), Exit.USAGE)
    url = connection.cloud_id or connection.url
    client = sync_client(connection, request_timeout=30)
    try:
        names = install_templates(client, settings, force=args.force)
    except TemplateConflict as exc:
        return _fail(args, f"refused: {exc}", Exit.FINDINGS)
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
        if not names:
            sys.stdout.write("every template is up to date\n")
    return 0


def _settings_source(args: argparse.Namespace) -> SimpleNamespace:
    """Flags first, then the receiver's environment variables, then the defaults."""
    values: dict[str, Any] = {}
    for key, flag, cast in (
        ("shards", args.shards, int),
        ("replicas", args.replicas, str),
        ("refresh_interval_s", args.refresh_interval_s, float),
    ):
        if flag is not None:
            values[key] = flag
            continue
        raw = os.environ.get("OTEL_AUDIT_" + key.upper())
        if raw:
            try:
                values[key] = cast(raw)
            except ValueError:
                raise ValueError(f"OTEL_AUDIT_{key.upper()}: {raw!r} is not valid") from None
    return SimpleNamespace(**values)


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
