"""``otel-audit demo`` (the ``make run`` job) and ``otel-audit demo traffic``."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run Elasticsearch, the receiver and demo services (make run)",
        description="Start the local Elasticsearch and the receiver, send demo traffic, "
        "print what arrived and keep serving until Ctrl-C.",
    )
    parser.add_argument("--checkouts", type=int, default=40, help="demo checkouts to send")
    parser.add_argument(
        "--no-serve", action="store_true", help="exit after printing instead of serving"
    )
    parser.set_defaults(handler=_run)
    sub = parser.add_subparsers(dest="demo_command", metavar="SUBCOMMAND")
    traffic = sub.add_parser(
        "traffic", help="only send demo traffic to an OTLP endpoint (receiver or Collector)"
    )
    traffic.add_argument(
        "--otlp-endpoint",
        default="127.0.0.1:4317",
        help="gRPC host:port, or http://host:4318 with --protocol http",
    )
    traffic.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    traffic.add_argument("--checkouts", type=int, default=40)
    traffic.add_argument(
        "--ordinary-logs", action="store_true", help="also emit ordinary (non-audit) logs"
    )
    traffic.add_argument("--json", action="store_true", help="print what was sent as JSON")
    traffic.set_defaults(handler=_traffic)


def _run(args: argparse.Namespace) -> int:
    from demo.run import run_demo

    return run_demo(checkouts=args.checkouts, keep_serving=not args.no_serve)


def _traffic(args: argparse.Namespace) -> int:
    from demo.run import send_traffic

    report = send_traffic(
        args.otlp_endpoint,
        protocol=args.protocol,
        checkouts=args.checkouts,
        ordinary_logs=args.ordinary_logs,
    )
    summary = {
        "valid_events": len(report.event_ids),
        "invalid_events": len(report.invalid_event_ids),
        "traces": len(report.trace_ids),
        "ordinary_logs": report.ordinary_logs,
        "by_service": dict(report.by_service),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"sent {summary['valid_events']} valid and {summary['invalid_events']} invalid "
            f"audit events in {summary['traces']} traces"
        )
    return 0
