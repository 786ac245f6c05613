"""The ``otel-audit`` command line.

Each sub-command lives beside the code it drives and exposes ``register(subparsers)``;
this module only lists them, imported lazily so that ``otel-audit --help`` stays fast
and the service-side library never imports server dependencies.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

# module path -> the sub-commands it registers (for lazy import)
COMMAND_MODULES: tuple[str, ...] = (
    "otel_audit.schema.cli",
    "indexer.local_es.cli",
    "otel_audit.integrity.cli",
    "indexer.integrity.cli",
    "indexer.templates_cli",
    "indexer.kibana.cli",
    "receiver.serve_cli",
    "indexer.query.cli",
    "demo.cli",
    "indexer.retention",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-audit",
        description="Audit events on OpenTelemetry and Elasticsearch.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = args.handler
    try:
        rc = handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``otel-audit ... | head``): not an error worth a traceback.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit
        return 141
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
