"""``python -m tests.drill`` (``make drill``): every drill at full size, one table row each.

Starts its own three-node cluster of the local distribution in a scratch directory
(``indexer.local_es.scratch``: on OTEL_AUDIT_ES_CLUSTER_URL when set, reused when one of
ours runs there), builds or reuses the Collector, runs the drills named in DRILLS (default:
all) and prints the table; with DRILL_JSON=<file> the rows are also written as JSON.
SOAK_SECONDS sets the soak's length (default 1800), DRILL_RATE the load of the other drills
(events/s, default 500); DRILL_KEEP=1 keeps the receivers' logs and state directories.
Exit 0 when every row has lost = 0, duplicated = 0 and verify clean; 1 otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from elasticsearch import Elasticsearch

from indexer.local_es.scratch import scratch_cluster
from otel_audit.exits import Exit
from tests.drill.harness import DrillRow, environ_float, format_row, print_table
from tests.drill.scenarios import ALL_DRILLS, DrillContext, DrillSizes, can_mount
from tests.support.collector_build import ensure_collector


def main() -> int:
    names = [n for n in os.environ.get("DRILLS", ",".join(ALL_DRILLS)).split(",") if n]
    unknown = [n for n in names if n not in ALL_DRILLS]
    if unknown:
        sys.stderr.write(f"drill: unknown drill(s) {unknown}; known: {list(ALL_DRILLS)}\n")
        return Exit.USAGE
    if "disk-full" in names and not can_mount():
        sys.stderr.write("drill: disk-full needs root to mount a small tmpfs; skipped\n")
        names.remove("disk-full")
    rate = environ_float("DRILL_RATE", 500.0)
    sizes = DrillSizes(
        rate_per_s=rate,
        soak_s=environ_float("SOAK_SECONDS", 1800.0),
        soak_rate_per_s=environ_float("SOAK_RATE", rate),
    )
    binary = ensure_collector()
    work_root = Path(tempfile.mkdtemp(prefix="otel-audit-drill-"))
    rows: list[DrillRow] = []
    try:
        with scratch_cluster("otel-audit-drill-es-") as cluster:
            es = Elasticsearch(
                cluster.urls, request_timeout=60, retry_on_timeout=True, max_retries=5
            )
            ctx = DrillContext(cluster, es, binary, work_root, sizes)
            try:
                for name in names:
                    t0 = time.monotonic()
                    sys.stderr.write(f"drill: {name} ...\n")
                    row = ALL_DRILLS[name](ctx)
                    rows.append(row)
                    sys.stderr.write(f"drill: {name} took {time.monotonic() - t0:.0f}s\n")
                    sys.stderr.write(format_row(row) + "\n")
            finally:
                es.close()
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    finally:
        if os.environ.get("DRILL_KEEP"):
            sys.stderr.write(f"drill: receivers' logs and state kept in {work_root}\n")
        else:
            shutil.rmtree(work_root, ignore_errors=True)
        print_table(rows)
        if os.environ.get("DRILL_JSON"):
            Path(os.environ["DRILL_JSON"]).write_text(
                json.dumps([r.to_json() for r in rows], indent=2) + "\n", encoding="utf-8"
            )
    return Exit.OK if rows and all(r.ok for r in rows) else Exit.FINDINGS


if __name__ == "__main__":
    raise SystemExit(main())
