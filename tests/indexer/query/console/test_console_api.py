"""The console's API routes against the real Elasticsearch, with events ingested and sealed
by the real write path: proofs equal ``otel-audit prove``'s and verify offline; exports
are capped and recorded; chain status; keys; refusals without a token."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from elasticsearch import Elasticsearch

from indexer.integrity.prove import prove
from indexer.query.api import build_app, start_query_api
from indexer.query.auth import hash_token
from indexer.query.console import ConsoleConfigError
from indexer.templates import install_templates
from otel_audit.integrity import Keyring, verify_bundle
from otel_audit.integrity.keys import generate_private_key, key_id, write_key_pair
from receiver.config import load_config
from receiver.ingest.consumer import build_consumer
from tests.support.integrity_harness import ingest

pytestmark = pytest.mark.integration

TOKEN = "console-api-test-token-0123456789"


def _config(tmp: Path, es_url: str, public_key: Path, **console: Any) -> Any:
    extra = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in console.items())
    path = tmp / "config.yaml"
    path.write_text(
        f"es_url: {es_url}\nquery_api_endpoint: 127.0.0.1:0\n"
        f"query:\n  tokens:\n    - {{subject: ada, sha256: {hash_token(TOKEN)}, roles: [reader]}}\n"
        f"console:\n  public_keys: [{json.dumps(str(public_key))}]\n{extra}"
    )
    return load_config(path, env={})


async def _get(http: aiohttp.ClientSession, url: str, token: str | None = TOKEN) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.read(), resp.headers


def test_console_routes(clean_es: Elasticsearch, es_url: str, tmp_path: Path) -> None:
    install_templates(clean_es)
    key = generate_private_key()
    files = write_key_pair(key, tmp_path / "keys")
    ids = asyncio.run(ingest(es_url, tmp_path / "state", key, [40, 70, 25]))
    clean_es.indices.refresh(index="audit-*")
    config = _config(tmp_path, es_url, files.public_key_path, max_export_events=7)
    ring = Keyring([key.public_key()])

    async def scenario() -> None:
        consumer = build_consumer(
            SimpleNamespace(
                es_url=es_url, spool_dir=str(tmp_path / "spool"), bulk_flush_interval_ms=2
            )
        )
        await consumer.start()
        runner = await start_query_api(config, consumer.consume_logs)
        api = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1"
        try:
            async with aiohttp.ClientSession() as http:
                for path in (f"/events/{ids[0]}/proof", "/export?format=csv", "/chains", "/whoami"):
                    status, _, headers = await _get(http, api + path, token=None)
                    assert status == 401 and "Bearer" in headers["WWW-Authenticate"], path
                # The console's bundles are the CLI's (the same block-record path, the same bytes).
                for event_id in (ids[0], ids[49], ids[77], ids[-1]):
                    status, body, _ = await _get(http, f"{api}/events/{event_id}/proof")
                    assert status == 200, body
                    bundle = json.loads(body)
                    assert bundle == prove(clean_es, event_id).to_json_dict()
                    assert verify_bundle(bundle, ring).ok
                status, body, _ = await _get(http, f"{api}/events/not-stored-0/proof")
                assert status == 404 and b"not in a sealed block" in body
                # Exports: capped, CSV with the header row, recorded before the first byte.
                status, body, headers = await _get(http, f"{api}/export?format=csv&service=billing")
                assert status == 200 and headers["X-Export-Max-Events"] == "7"
                rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
                assert len(rows) == 7 and {r["service.name"] for r in rows} == {"billing"}
                status, body, _ = await _get(http, f"{api}/export?format=xml")
                assert status == 400 and b"format" in body
                status, body, _ = await _get(http, f"{api}/export?format=csv&colour=red")
                assert status == 400 and b"colour" in body
                # Chain status and keys.
                status, body, _ = await _get(http, f"{api}/chains")
                chains = json.loads(body)["chains"]
                assert [c["chain_id"] for c in chains] == ["test-chain"]
                assert chains[0]["last_block"]["tree_size"] == len(ids)
                assert chains[0]["witness"] is None
                status, body, _ = await _get(http, f"{api}/keys", token=None)
                assert json.loads(body)["keys"][0]["key_id"] == key_id(key)
                status, body, _ = await _get(http, f"{api}/whoami")
                assert json.loads(body) == {"subject": "ada", "roles": ["reader"]}
        finally:
            await runner.cleanup()
            await consumer.shutdown(5.0)

    asyncio.run(scenario())
    clean_es.indices.refresh(index="audit-events*")
    audits = clean_es.search(
        index="audit-events",
        query={"bool": {"filter": [{"term": {"user.id": "ada"}}]}},
        size=100,
    )["hits"]["hits"]
    actions = sorted({h["_source"]["event"]["action"] for h in audits})
    assert actions == ["audit_log.export", "audit_log.prove", "audit_log.status"]


def test_a_missing_public_key_stops_the_api_at_start(tmp_path: Path, es_url: str) -> None:
    config = _config(tmp_path, es_url, tmp_path / "nowhere.pem")
    with pytest.raises(ConsoleConfigError, match=r"console\.public_keys\[0\].*no such file"):
        build_app(config)
