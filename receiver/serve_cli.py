"""``otel-audit serve`` and ``otel-audit query-api``: run the receiver, or the query API alone.

::

    otel-audit serve --config receiver.yaml
    otel-audit serve --check-config --json      # print the effective config and exit
    otel-audit query-api --config receiver.yaml # /api/v1 alone; its audit events go by OTLP

Environment variables ``OTEL_AUDIT_<KEY>`` override the file; flags override both.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from otel_audit.exits import Exit
from receiver.config import ConfigError, config_as_dict, load_config

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``serve`` and ``query-api`` sub-commands."""
    parser = subparsers.add_parser(
        "serve",
        help="run the OTLP receiver (gRPC :4317, HTTP :4318)",
        description="Receive audit events over OTLP, validate them and store them durably.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file")
    parser.add_argument("--grpc-endpoint", metavar="HOST:PORT", help="override grpc_endpoint")
    parser.add_argument("--http-endpoint", metavar="HOST:PORT", help="override http_endpoint")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="load and validate the configuration, print it, and exit",
    )
    parser.add_argument("--json", action="store_true", help="with --check-config: print JSON")
    parser.set_defaults(handler=_run)

    a = subparsers.add_parser(
        "query-api",
        help="run the query API on its own",
        description="Serve /api/v1 with the query section of the config; query audit "
        "events go through OTLP to the receiver (query.receiver_endpoint).",
    )
    a.add_argument("--config", default=None, help="YAML config file (same as serve)")
    a.add_argument("--endpoint", default=None, help="listen host:port (default 127.0.0.1:8080)")
    a.set_defaults(handler=_run_query_api)


def _run(args: argparse.Namespace) -> int:

    overrides = {
        key: value
        for key, value in (
            ("grpc_endpoint", args.grpc_endpoint),
            ("http_endpoint", args.http_endpoint),
            ("log_level", args.log_level),
        )
        if value is not None
    }
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"otel-audit serve: {exc}", file=sys.stderr)
        return Exit.USAGE
    if args.check_config:
        data = config_as_dict(config)
        if args.json:
            import orjson

            sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            for key, value in data.items():
                print(f"{key}: {value}")
        return 0

    from receiver.logging_setup import setup_logging
    from receiver.server import serve

    setup_logging(config.log_level)
    return asyncio.run(serve(config))


def _run_query_api(args: argparse.Namespace) -> int:
    overrides = {"query_api_endpoint": args.endpoint} if args.endpoint else None
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"query-api: {exc}", file=sys.stderr)
        return Exit.USAGE
    return asyncio.run(_serve_api(config))


async def _serve_api(config: Any) -> int:
    from indexer.query.api import start_query_api
    from indexer.query.config import query_config_of

    cfg = query_config_of(config)
    if not cfg.tokens:
        print(
            "query-api: warning: no query.tokens configured; every request is refused",
            file=sys.stderr,
        )
    from indexer.tls import serve_tls_of

    tls = serve_tls_of(config)
    runner = await start_query_api(config, None, ssl_context=tls.ssl_context if tls else None)
    reloads = asyncio.ensure_future(tls.reload_forever()) if tls else None
    print(f"query-api: listening on {cfg.endpoint}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if reloads is not None:
        reloads.cancel()
    await runner.cleanup()
    return 0
