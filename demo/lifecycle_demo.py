"""The lifecycle in ``make run``: a cold store on the local S3 server, history older than
the demo's hot window, archived by the receiver's own schedule and still found by a query.

``run.py`` creates :class:`LifecycleDemo` before the receiver starts (it starts s3proxy and
adds a ``lifecycle`` section to the demo config: hot for 1 day, a run every 5 s), calls
:meth:`LifecycleDemo.show` once the live traffic is stored, and :meth:`LifecycleDemo.stop`
at the end.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from indexer.local_s3 import LocalS3
from otel_audit.emit import event_id_at
from otel_audit.record import LogRecordData

__all__ = ["LifecycleDemo"]

BUCKET = "otel-audit-demo"
HISTORY_DAYS_AGO = 3
HISTORY_EVENTS = 30
_DAY_S = 86_400


def _say(message: str) -> None:
    print(message, flush=True)


class LifecycleDemo:
    """See the module docstring."""

    def __init__(self, state: Path) -> None:
        self.state = state
        url = os.environ.get("OTEL_AUDIT_S3_URL", "http://127.0.0.1:9290")
        self.s3 = LocalS3(url=url, data_dir=state / "s3", progress=None)
        _say(f"== cold store: the local S3 server at {self.s3.url} (s3proxy)")
        self.started = self.s3.ensure_started()
        self.s3.ensure_bucket(BUCKET)
        opts = self.s3.client_options()
        self.section = (
            "lifecycle:\n"
            "  hot_days: 1            # the demo's hot window: older days go to the archive\n"
            "  interval_s: 5\n"
            "  cold_store:\n"
            f"    url: s3://{BUCKET}/archive\n"
            f"    endpoint_url: {opts['endpoint_url']}\n"
            f"    access_key_id: {opts['aws_access_key_id']}\n"
            f"    secret_access_key: {opts['aws_secret_access_key']}\n"
        )
        self.day = time.strftime("%Y.%m.%d", time.gmtime(time.time() - HISTORY_DAYS_AGO * _DAY_S))

    def add_to(self, config: Path) -> None:
        """Append the lifecycle section to the demo's config file."""
        with config.open("a", encoding="utf-8") as fh:
            fh.write(self.section)

    def show(self, es: Any, http_port: int, query_port: int, token: str) -> bool:
        """Send history, wait for the schedule to archive it, query it; True when found."""
        from receiver.lifecycle import otlp_recorder

        record = otlp_recorder(f"127.0.0.1:{http_port}")
        start_s = (int(time.time()) // _DAY_S - HISTORY_DAYS_AGO) * _DAY_S + 9 * 3600
        _say(f"== sending {HISTORY_EVENTS} audit events dated {self.day} (older than 1 day)")
        for n in range(HISTORY_EVENTS):
            ns = (start_s + n * 60) * 1_000_000_000
            record(
                LogRecordData(
                    attributes={
                        "audit.event.id": event_id_at(ns // 1_000_000),
                        "audit.action": "user.login",
                        "audit.category": "authentication",
                        "audit.outcome": "success" if n % 4 else "failure",
                        "audit.actor.id": f"user-{n % 5}",
                        "audit.actor.type": "user",
                    },
                    resource={"service.name": "storefront"},
                    time_unix_nano=ns,
                    observed_time_unix_nano=ns,
                    body=f"user-{n % 5} logged in",
                )
            )
        index = f"audit-events-{self.day}"
        deadline = time.monotonic() + 90
        while es.indices.exists(index=index) and time.monotonic() < deadline:
            time.sleep(1)
        if es.indices.exists(index=index):
            _say(f"   the lifecycle did not archive {index} within 90 s (see the receiver log)")
            return False
        _say(
            f"   archived by the receiver's lifecycle to s3://{BUCKET}/archive/days/{self.day}/ "
            f"and removed from Elasticsearch ({index})"
        )
        params = urllib.parse.urlencode(
            {"from": self.day.replace(".", "-"), "service": "storefront", "action": "user.login"}
        )
        req = urllib.request.Request(
            f"http://127.0.0.1:{query_port}/api/v1/events?{params}",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            page = json.loads(resp.read())
        archived = [e for e in page["events"] if e.get("integrity", {}).get("tier") == "archive"]
        _say(
            f"   still searchable: the query API found {len(archived)} archived events of "
            f"{self.day} (first page, marked archived)"
        )
        opts = self.s3.client_options()
        keys = (
            Path(os.environ.get("OTEL_AUDIT_INTEGRITY__STATE_DIR") or self.state / "integrity")
            / "keys"
        )
        _say(
            "   verify the archive offline (no Elasticsearch needed):\n"
            f"     export OTEL_AUDIT_COLD_STORE_ENDPOINT_URL={opts['endpoint_url']} "
            f"OTEL_AUDIT_COLD_STORE_ACCESS_KEY_ID={opts['aws_access_key_id']} "
            f"OTEL_AUDIT_COLD_STORE_SECRET_ACCESS_KEY={opts['aws_secret_access_key']}\n"
            f"     otel-audit verify --archive s3://{BUCKET}/archive --public-key {keys}"
        )
        return bool(archived)

    def stop(self) -> None:
        """Stop the S3 server if this demo started it."""
        if self.started:
            self.s3.stop()
            _say("== stopped the local S3 server this command started")
