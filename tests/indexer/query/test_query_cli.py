"""``otel-audit query`` and ``otel-audit trace`` against a running API."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from otel_audit.cli import main
from tests.indexer.query.query_harness import TOKENS, Api, index_records, prepare, record

pytestmark = pytest.mark.integration

TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"


def test_query_and_trace_commands(
    clean_es: Elasticsearch, es_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare(clean_es)
    now = time.time_ns()
    recs = [record(i, ts_ns=now - i * 10**9, service="cli-svc") for i in range(12)]
    recs.append(
        record(
            99,
            ts_ns=now,
            service="cli-svc",
            actor="evil\n2024 fake row\x1b[31m",
            trace_id=TRACE,
            span_id="00f067aa0ba902b7",
        )
    )
    index_records(clean_es, recs)

    async def scenario() -> tuple[list[int], str, str, str]:
        async with Api(es_url, tmp_path, audit_queries=False) as api:
            url = api.base.removesuffix("/api/v1")
            common = ["--api-url", url, "--token", TOKENS["reader"]]
            codes = [
                await asyncio.to_thread(
                    main, ["query", "--service", "cli-svc", "--all", "--limit", "5", *common]
                )
            ]
            table = capsys.readouterr()
            codes.append(
                await asyncio.to_thread(
                    main, ["query", "--service", "cli-svc", "--json", "--all", *common]
                )
            )
            as_json = capsys.readouterr().out
            codes.append(await asyncio.to_thread(main, ["trace", TRACE, *common]))
            trace = capsys.readouterr().out
            codes.append(await asyncio.to_thread(main, ["query", "--from", "nonsense", *common]))
            err = capsys.readouterr().err
            codes.append(
                await asyncio.to_thread(main, ["query", "--api-url", url, "--token", "bad"])
            )
            return codes, table.out + "\n" + table.err, as_json, trace + err

    codes, table, as_json, rest = asyncio.run(scenario())
    # A bad argument is usage (2); a refused token is the API refusing us (3).
    assert codes == [0, 0, 0, 2, 3]
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["time", "action", "outcome"]
    assert sum(1 for line in lines if "cli-svc" in line) == 13
    assert "evil\\n2024 fake row\\x1b[31m" in table and "\x1b" not in table
    assert "query: 13 events" in table
    assert len([json.loads(line) for line in as_json.splitlines()]) == 13
    assert TRACE in rest and "audit events whose span is not stored" in rest
    assert "from" in rest and "not a time" in rest
