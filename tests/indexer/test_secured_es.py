"""Every client against the real Elasticsearch with security and TLS on, each as a file-realm
user holding only its documented role (``indexer.es_client.ROLES``, docs/security.md).

With the right CA and password: templates install, the receiver writes and seals, the query
API answers, verify finds the chain intact. With a wrong CA, a wrong password or an unknown
API key: the CLIs exit 3 with a sentence naming the cause and no secret; the receiver keeps
what it acknowledged in its spool and writes it once restarted with the right password.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from elasticsearch import Elasticsearch

from indexer.es_client import ROLES, EsConnection, async_client, sync_client
from indexer.lifecycle.archive import list_days
from indexer.lifecycle.restore import restore_days
from indexer.lifecycle.verify_archive import verify_archive
from indexer.local_es import LocalElasticsearch
from indexer.local_es.security import LocalUser, ensure_security_files
from indexer.local_es.state import wipe_project_state
from indexer.local_s3 import LocalS3
from indexer.query.api import start_query_api
from indexer.query.auth import hash_token
from indexer.query.config import QueryConfig, TokenEntry
from otel_audit.cli import main
from otel_audit.integrity import Keyring, generate_private_key, write_key_pair
from receiver.config import load_config
from receiver.ingest.consumer import IngestConsumer, IngestSettings
from receiver.ingest.spool import Spool
from receiver.lifecycle import cold_store_of
from receiver.sealing.sealer import Sealer
from tests.receiver.conftest import audit_record
from tests.support.integrity_harness import integrity_config
from tests.support.lifecycle_harness import (
    Clock,
    Ingest,
    day_name,
    day_start_ms,
    lifecycle_events,
    local_s3,
    records_on,
    run,
    runner,
    write_config,
)

pytestmark = pytest.mark.integration

# The lifecycle's role without its one destructive privilege.
NO_DELETE = "lifecycle_without_delete"
NO_DELETE_ROLE = json.loads(json.dumps(ROLES["otel_audit_lifecycle"]))  # a deep copy
NO_DELETE_ROLE["indices"] = [
    i for i in NO_DELETE_ROLE["indices"] if "delete_index" not in i["privileges"]
]
PASSWORDS = {name: f"pw-{name}-0123456789" for name in (*ROLES, NO_DELETE)}
WRONG = "not-the-password-0123456789"
KEY = generate_private_key()
READER_TOKEN = "secured-reader-token-0123456789"


@pytest.fixture(scope="module")
def secured(secure_es: LocalElasticsearch) -> Iterator[dict[str, Any]]:
    users = [LocalUser(name, PASSWORDS[name], (name,)) for name in (*ROLES, NO_DELETE)]
    roles = {k: dict(v) for k, v in ROLES.items()}
    secure_es.add_users(users, roles={**roles, NO_DELETE: NO_DELETE_ROLE})
    admin = Elasticsearch(**secure_es.client_options(), request_timeout=30)
    other_ca = ensure_security_files(Path(tempfile.mkdtemp(prefix="otel-audit-other-ca-")))
    try:
        yield {
            "url": secure_es.url,
            "ca": str(secure_es.security.ca_cert),
            "other_ca": str(other_ca.ca_cert),
            "admin": admin,
        }
    finally:
        admin.close()


def _conn(s: dict[str, Any], role: str, **kw: str) -> EsConnection:
    values = {"url": s["url"], "username": role, "password": PASSWORDS[role], "ca_file": s["ca"]}
    values.update(kw)
    return EsConnection(**values)


def _env(conn: EsConnection) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_AUDIT_ES_")}
    for name, var in (
        ("url", "OTEL_AUDIT_ES_URL"),
        ("username", "OTEL_AUDIT_ES_USERNAME"),
        ("password", "OTEL_AUDIT_ES_PASSWORD"),
        ("api_key", "OTEL_AUDIT_ES_API_KEY"),
        ("ca_file", "OTEL_AUDIT_ES_CA_FILE"),
    ):
        if getattr(conn, name):
            env[var] = getattr(conn, name)
    return env


@dataclass
class _Ran:
    returncode: int
    stdout: str
    stderr: str


def _cli(conn: EsConnection, *args: str) -> _Ran:
    """Run an ``otel-audit`` command in process with only ``conn`` in the environment."""
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(_env(conn))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return _Ran(int(code), out.getvalue(), err.getvalue())


def _consumer(conn: EsConnection, state: Path) -> tuple[IngestConsumer, Sealer]:
    es = async_client(conn, request_timeout=10, max_retries=0)
    sealer = Sealer(es, integrity_config(state), private_key=KEY)
    spool = str(state / "spool")
    consumer = IngestConsumer(
        es,
        Spool(spool, 64 * 1024 * 1024, retry_after_s=1.0),
        IngestSettings(es_url=conn.url, spool_dir=spool, bulk_flush_interval_ms=2),
        sealer=sealer,
        close_client=True,
    )
    return consumer, sealer


def _count(admin: Elasticsearch, ids: list[str]) -> int:
    admin.indices.refresh(index="audit-*")
    resp = admin.count(index="audit-events", query={"ids": {"values": ids}})
    return int(resp["count"])


def test_clients_work_as_least_privileged_users_with_a_ca(
    secured: dict[str, Any], tmp_path: Path
) -> None:
    admin: Elasticsearch = secured["admin"]
    admin.options(ignore_status=404).indices.delete_index_template(name="otel-audit-*")
    # The writer's role may not manage templates: a clear 403, exit 3.
    denied = _cli(_conn(secured, "otel_audit_writer"), "templates", "install")
    assert denied.returncode == 3, denied.stderr
    assert "denied the request (403)" in denied.stderr
    # The setup role installs them.
    setup = _cli(_conn(secured, "otel_audit_setup"), "templates", "install", "--json")
    assert setup.returncode == 0, setup.stderr
    assert "otel-audit-events" in json.loads(setup.stdout)["installed"]

    # The receiver's write path (with sealing) as the writer.
    state = tmp_path / "state"
    records = [audit_record(i) for i in range(40)]
    ids = [r.attributes["audit.event.id"] for r in records]

    async def write() -> None:
        consumer, sealer = _consumer(_conn(secured, "otel_audit_writer"), state)
        await consumer.start()
        try:
            result = await consumer.consume_logs(records)
            assert (result.accepted, result.rejected) == (40, 0), result
            await sealer.force_flush()
        finally:
            await consumer.shutdown(10)

    asyncio.run(write())
    assert _count(admin, ids) == 40

    # verify as the verify role, with the CA: the chain is intact.
    pub = write_key_pair(KEY, tmp_path / "keys").public_key_path
    verified = _cli(
        _conn(secured, "otel_audit_verify"),
        "verify",
        "--public-key",
        str(pub),
        "--checkpoint-dir",
        str(state / "checkpoints"),
        "--grace-s",
        "0",
        "--quiet",
        "--json",
    )
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]

    # The query API as the reader role (its own query audit off: the reader cannot write).
    async def query() -> None:
        cfg = QueryConfig(
            endpoint="127.0.0.1:0",
            es_url=secured["url"],
            tokens=(TokenEntry(subject="alice", sha256=hash_token(READER_TOKEN)),),
            audit_queries=False,
        )
        runner = await start_query_api(cfg)
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1"
        headers = {"Authorization": f"Bearer {READER_TOKEN}"}
        try:
            async with aiohttp.ClientSession(headers=headers) as session:
                async with session.get(base + "/events", params={"limit": "100"}) as resp:
                    page = await resp.json()
                    assert resp.status == 200, page
                    assert {e["event"]["id"] for e in page["events"]} >= set(ids)
                async with session.get(base + f"/events/{ids[0]}") as resp:
                    one = await resp.json()
                    assert resp.status == 200 and one["block"] is not None, one
                async with session.get(base + "/healthz") as resp:
                    assert resp.status == 200
        finally:
            await runner.cleanup()

    env = _env(_conn(secured, "otel_audit_reader"))
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        asyncio.run(query())
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_wrong_ca_password_or_key_fail_clearly_and_lose_nothing(
    secured: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    admin: Elasticsearch = secured["admin"]
    setup = _conn(secured, "otel_audit_setup")
    cases = {
        "wrong CA": (_conn(secured, "otel_audit_setup", ca_file=secured["other_ca"]), "TLS"),
        "wrong password": (_conn(secured, "otel_audit_setup", password=WRONG), "credentials"),
        "unknown API key": (
            EsConnection(
                url=secured["url"], api_key="bm90LWEta2V5OnVua25vd24=", ca_file=setup.ca_file
            ),
            "credentials",
        ),
    }
    for what, (conn, words) in cases.items():
        for args in (("templates", "install"), ("verify", "--checkpoint-dir", "none", "--quiet")):
            if args[0] == "verify":
                pub = write_key_pair(KEY, tmp_path / "k", force=True).public_key_path
                args = (*args, "--public-key", str(pub))
            out = _cli(conn, *args)
            assert out.returncode == 3, (what, args, out.stdout, out.stderr)
            assert words in out.stderr, (what, args, out.stderr)
            for secret in (WRONG, PASSWORDS["otel_audit_setup"], "bm90LWEta2V5OnVua25vd24="):
                assert secret not in out.stdout + out.stderr

    # The query API with a wrong CA: health says so, a search is a 503, nothing leaks.
    async def query_with_wrong_ca() -> None:
        cfg = QueryConfig(
            endpoint="127.0.0.1:0",
            es_url=secured["url"],
            tokens=(TokenEntry(subject="alice", sha256=hash_token(READER_TOKEN)),),
            audit_queries=False,
        )
        runner = await start_query_api(cfg)
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1"
        headers = {"Authorization": f"Bearer {READER_TOKEN}"}
        try:
            async with aiohttp.ClientSession(headers=headers) as session:
                async with session.get(base + "/healthz") as resp:
                    assert resp.status == 503
                    assert (await resp.json())["elasticsearch"] == "unreachable"
                async with session.get(base + "/events") as resp:
                    body = await resp.json()
                    assert resp.status == 503 and body["error"]["code"] == "store_unavailable"
        finally:
            await runner.cleanup()

    reader_wrong_ca = _conn(secured, "otel_audit_reader", ca_file=secured["other_ca"])
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(_env(reader_wrong_ca))
    try:
        asyncio.run(query_with_wrong_ca())
    finally:
        os.environ.clear()
        os.environ.update(saved)

    # The receiver with a wrong password: what it acknowledges is spooled, never lost.
    state = tmp_path / "state"
    records = [audit_record(1000 + i) for i in range(25)]
    ids = [r.attributes["audit.event.id"] for r in records]

    async def write(conn: EsConnection, batch: list[Any]) -> None:
        consumer, sealer = _consumer(conn, state)
        await consumer.start()
        try:
            if batch:
                result = await consumer.consume_logs(batch)
                assert result.accepted == len(batch), result
            # Refused credentials: nothing can arrive, do not wait for it.
            for _ in range(100 if conn.password != WRONG else 0):
                if _count(admin, ids) == len(ids):
                    break
                await asyncio.sleep(0.2)
            await sealer.force_flush()
        finally:
            await consumer.shutdown(10)

    caplog.set_level(logging.DEBUG)
    asyncio.run(write(_conn(secured, "otel_audit_writer", password=WRONG), records))
    assert _count(admin, ids) == 0
    assert [p for p in (state / "spool").iterdir() if p.name != "LOCK"]
    assert WRONG not in caplog.text and PASSWORDS["otel_audit_writer"] not in caplog.text
    # Restarted with the right password: the spool drains into Elasticsearch.
    asyncio.run(write(_conn(secured, "otel_audit_writer"), []))
    assert _count(admin, ids) == 25


@pytest.fixture(scope="module")
def secured_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """The real S3 server (s3proxy) the lifecycle archives to."""
    with local_s3(tmp_path_factory.mktemp("secured-s3")) as server:
        yield server


def _as(path: Path, conn: EsConnection, name: str) -> Path:
    """A copy of the receiver config at ``path`` that connects as ``conn``."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.update(
        es_url=conn.url,
        es_username=conn.username,
        es_password=conn.password,
        es_ca_file=conn.ca_file,
    )
    out = path.with_name(name)
    out.write_text(yaml.safe_dump(data), encoding="utf-8")
    return out


def test_lifecycle_archives_deletes_and_restores_as_the_lifecycle_role(
    secured: dict[str, Any], secured_s3: LocalS3, tmp_path: Path
) -> None:
    admin: Elasticsearch = secured["admin"]
    wipe_project_state(admin)
    installed = _cli(_conn(secured, "otel_audit_setup"), "templates", "install", "--json")
    assert installed.returncode == 0, installed.stderr
    base = write_config(tmp_path, secured["url"], secured_s3)
    writer = load_config(_as(base, _conn(secured, "otel_audit_writer"), "writer.yaml"))
    lifecycle = _as(base, _conn(secured, "otel_audit_lifecycle"), "lifecycle.yaml")
    partial = _as(base, _conn(secured, NO_DELETE), "no-delete.yaml")
    old, middle = day_start_ms(100), day_start_ms(40)
    indices = [f"audit-events-{day_name(d)}" for d in (old, middle)]
    store = cold_store_of(writer)
    clock = Clock()

    with Ingest(writer) as ingest:
        ingest.store(records_on(old, 60) + records_on(middle, 40))
        ingest.seal()
        ring = Keyring.from_paths([tmp_path / "integrity-state" / "keys"])
        # Without delete_index: the days are archived, their deletion is refused with the
        # privilege and the user named, and the hot indices stay.
        refused = runner(partial, ingest.record, clock).run()
        assert not refused.ok
        why = " ".join(refused.errors)
        assert "403" in why and "delete_index" in why and NO_DELETE in why, refused.errors
        assert all(admin.indices.exists(index=i) for i in indices)
        assert list_days(store) == [day_name(old), day_name(middle)]
        # hot_days 30: the lifecycle role deletes the archived days' hot indices.
        first = run(runner(lifecycle, ingest.record, clock))
        ingest.seal()
        assert {d.day: d.action for d in first.days if d.action != "keep"} == {
            day_name(old): "index_delete",
            day_name(middle): "index_delete",
        }
        assert not any(admin.indices.exists(index=i) for i in indices)
        archived = verify_archive(store, ring)
        assert archived.ok and [d.state for d in archived.days] == ["archived"] * 2, archived

        # Restored by the same role for 60 days: the events are back in their index.
        es = sync_client(_conn(secured, "otel_audit_lifecycle"), request_timeout=60)
        try:
            day = datetime.fromtimestamp(middle / 1000, UTC).date()
            restored = restore_days(
                es,
                store,
                ring,
                first=day,
                last=day,
                keep_days=60,
                now_ms=clock(),
                record=ingest.record,
                actor="auditor",
            )
        finally:
            es.close()
        assert restored.restored == {day_name(middle): 40}, restored.to_json_dict()
        ingest.seal()
    assert admin.count(index=indices[1])["count"] == 40

    # 30 days later the oldest is past retention (130 > 120): its archive is purged by a
    # signed record; the restored day is kept.
    clock.advance_days(30)
    with Ingest(writer) as ingest:
        second = run(runner(lifecycle, ingest.record, clock))
        ingest.seal()
    assert {d.day: d.action for d in second.days if d.action != "keep"} == {day_name(old): "purge"}
    purged = verify_archive(store, ring)
    assert purged.ok, purged.to_json_dict()
    assert {d.day: d.state for d in purged.days} == {
        day_name(old): "purged",
        day_name(middle): "archived",
    }
    steps = {(e["event"]["action"], e["audit"]["resource"]["id"]) for e in lifecycle_events(admin)}
    assert {
        ("audit_log.archive", day_name(old)),
        ("audit_log.index_delete", indices[0]),
        ("audit_log.index_delete", indices[1]),
        ("audit_log.purge", day_name(old)),
    } <= steps, steps
