"""The ``otel-audit`` command line: the one root that sees every layer.

Each sub-command lives beside the code it drives and exposes ``register(subparsers)``;
this module only lists them. It is the only module of ``otel_audit`` that imports the
server packages (``make lint``'s import contracts name it as the exception), and it does
so when the parser is built, so that importing ``otel_audit`` stays free of them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from otel_audit.exits import Exit


def command_modules() -> tuple[ModuleType, ...]:
    """The modules that register sub-commands, in ``--help`` order."""
    from demo import cli as demo_cli
    from indexer import retention, templates_cli
    from indexer.integrity import cli as verify_cli
    from indexer.integrity import witness_cli
    from indexer.kibana import cli as kibana_cli
    from indexer.local_es import cli as local_es_cli
    from indexer.local_s3 import cli as local_s3_cli
    from indexer.query import cli as query_cli
    from otel_audit.integrity import cli as keys_cli
    from otel_audit.schema import cli as schema_cli
    from receiver import lifecycle_cli, serve_cli

    return (
        schema_cli,
        local_es_cli,
        local_s3_cli,
        keys_cli,
        verify_cli,
        witness_cli,
        templates_cli,
        kibana_cli,
        serve_cli,
        query_cli,
        demo_cli,
        lifecycle_cli,
        retention,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("otel-audit")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-audit",
        description="Audit events on OpenTelemetry and Elasticsearch.",
        epilog="Exit codes: 0 ok, 1 findings, 2 usage, 3 unavailable, 4 stale, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in command_modules():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ModuleNotFoundError as exc:
        # `pip install otel-audit` is what a service needs (the OTel API and SDK); the
        # commands live on the server side.
        sys.stderr.write(
            f"otel-audit: the command line needs the server dependencies ({exc.name} is "
            "missing): pip install 'otel-audit[server]'\n"
        )
        return Exit.UNAVAILABLE
    args = parser.parse_args(argv)
    handler = args.handler
    try:
        rc = handler(args)
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``otel-audit ... | head``): not an error worth a traceback.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit
        return 141
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
