"""``otel-audit verify --archive URL``: verify a cold archive offline, without Elasticsearch.

The archive is a directory or ``s3://bucket/prefix``; an S3-compatible endpoint and its
credentials come from ``--archive-endpoint`` or ``OTEL_AUDIT_COLD_STORE_ENDPOINT_URL``,
``OTEL_AUDIT_COLD_STORE_ACCESS_KEY_ID`` / ``OTEL_AUDIT_COLD_STORE_SECRET_ACCESS_KEY`` (else
the AWS default chain). Exit 0 when every day verifies, 1 with findings, 2 for bad
arguments, 3 when the store cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from indexer.lifecycle.archive import DayReport
from indexer.lifecycle.config import ColdStoreConfig
from indexer.lifecycle.store import ColdStore, ColdStoreError, open_cold_store
from indexer.lifecycle.verify_archive import verify_archive
from otel_audit.exits import Exit
from otel_audit.integrity import Keyring

__all__ = ["add_arguments", "open_archive", "run_archive_verify"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The archive flags of ``otel-audit verify``."""
    parser.add_argument(
        "--archive",
        metavar="URL",
        help="verify this cold archive (directory or s3://bucket/prefix) offline instead",
    )
    parser.add_argument(
        "--archive-endpoint",
        metavar="URL",
        help="S3-compatible endpoint of --archive (default $OTEL_AUDIT_COLD_STORE_ENDPOINT_URL)",
    )


def open_archive(url: str, endpoint: str | None = None) -> ColdStore:
    """The store behind ``--archive`` (credentials from the environment)."""
    env = os.environ
    config = ColdStoreConfig(
        url=url,
        endpoint_url=endpoint or env.get("OTEL_AUDIT_COLD_STORE_ENDPOINT_URL", ""),
        region=env.get("OTEL_AUDIT_COLD_STORE_REGION", "us-east-1"),
        access_key_id=env.get("OTEL_AUDIT_COLD_STORE_ACCESS_KEY_ID", ""),
        secret_access_key=env.get("OTEL_AUDIT_COLD_STORE_SECRET_ACCESS_KEY", ""),
    )
    config.validate()
    return open_cold_store(config)


def run_archive_verify(args: argparse.Namespace, keyring: Keyring) -> int:
    """Verify ``args.archive`` and print the report; the exit code."""
    try:
        store = open_archive(args.archive, args.archive_endpoint)
    except ValueError as exc:
        return _fail(args, f"--archive: {exc}", Exit.USAGE)

    def progress(day: DayReport) -> None:
        if not args.quiet:
            state = day.state if day.ok else f"{len(day.findings)} findings"
            sys.stderr.write(f"verify: archive day {day.day}: {state}, {day.events:,} events\n")

    try:
        report = verify_archive(store, keyring, progress=progress)
    except ColdStoreError as exc:
        return _fail(args, str(exc), Exit.UNAVAILABLE)
    data = report.to_json_dict()
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        _print(data)
    return Exit.OK if report.ok else Exit.FINDINGS


def _fail(args: argparse.Namespace, message: str, code: Exit) -> int:
    if args.json:
        sys.stdout.write(json.dumps({"ok": False, "error": message}) + "\n")
    else:
        sys.stderr.write(f"otel-audit: error: {message}\n")
    return code


def _escape(text: str) -> str:
    """Control characters as visible escapes: what the archive holds cannot drive the terminal."""
    return "".join(ch if ch.isprintable() or ch == " " else f"\\u{ord(ch):04x}" for ch in text)


def _print(data: dict[str, Any]) -> None:
    out = sys.stdout.write
    s = data["summary"]
    for day in data["days"]:
        hot = ", removed from Elasticsearch by the policy" if day["hot_deleted"] else ""
        out(f"day {day['day']}: {day['state']}, {day['events']:,} events{hot}\n")
        for f in day["findings"]:
            eid = f" event {f['event_id']}" if "event_id" in f else ""
            out(f"  {f['kind'].upper()}{eid}: {_escape(f['message'])}\n")
    for f in data.get("catalog", []):
        out(f"catalog: {f['kind'].upper()}: {_escape(f['message'])}\n")
    verdict = "CLEAN" if data["ok"] else "TAMPERING DETECTED"
    out(
        f"\n{verdict}: archive {data['store']}: {s['days']} days ({s['archived']} archived, "
        f"{s['purged']} purged by the retention policy), {s['events']:,} events, "
        f"{sum(s['findings'].values())} findings\n"
    )
