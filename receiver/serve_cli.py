"""``otel-audit serve``: run the OTLP receiver.

::

    otel-audit serve --config receiver.yaml
    otel-audit serve --check-config --json      # print the effective config and exit

Environment variables ``OTEL_AUDIT_<KEY>`` override the file; flags override both.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``serve`` sub-command."""
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


def _run(args: argparse.Namespace) -> int:
    from receiver.config import ConfigError, config_as_dict, load_config

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
        return 2
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
