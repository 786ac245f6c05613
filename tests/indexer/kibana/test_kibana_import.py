"""The ``otel-audit kibana import`` client against Kibana's import endpoint contract.

The server here mimics only ``POST [/s/<space>]/api/saved_objects/_import`` (and
``/api/status`` for ``--wait-s``) as Kibana documents it: the ``kbn-xsrf`` header is
required, the NDJSON arrives as the multipart field ``file`` (a ``.ndjson`` file name),
``overwrite`` is a query parameter, and the answer is 200 with per-object
``successResults``/``errors`` or a request-level error. It records each request so the
tests can check its shape.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from indexer.kibana.objects import render_ndjson
from indexer.local_es.security import ensure_security_files
from otel_audit.cli import main


@dataclass
class _Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    field_names: list[str]
    filename: str | None
    lines: list[dict[str, Any]]


@dataclass
class FakeKibana:
    """Behaviour knobs and what was received."""

    url: str = ""
    requests: list[_Request] = field(default_factory=list)
    existing: set[tuple[str, str]] = field(default_factory=set)
    """Objects already in Kibana that imported objects may reference."""
    require_auth: str | None = None
    """Expected Authorization header value; None accepts anything."""
    unavailable_polls: int = 0
    """How many /api/status calls answer 503 before 200."""
    status_polls: int = 0
    fail_with: tuple[int, dict[str, Any]] | None = None


KB = web.AppKey("kb", FakeKibana)


async def _import(request: web.Request) -> web.Response:
    kb = request.app[KB]
    if request.headers.get("kbn-xsrf") is None:
        return web.json_response(
            {
                "statusCode": 400,
                "error": "Bad Request",
                "message": "Request must contain a kbn-xsrf header.",
            },
            status=400,
        )
    if kb.require_auth is not None and request.headers.get("Authorization") != kb.require_auth:
        return web.json_response(
            {"statusCode": 401, "error": "Unauthorized", "message": "Unauthorized"}, status=401
        )
    if kb.fail_with is not None:
        status, body = kb.fail_with
        return web.json_response(body, status=status)
    reader = await request.multipart()
    names: list[str] = []
    filename = None
    data = b""
    while (part := await reader.next()) is not None:
        names.append(part.name or "")
        if part.name == "file":
            filename = part.filename
            data = await part.read()
    lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    kb.requests.append(
        _Request(
            request.path,
            dict(request.query),
            dict(request.headers),
            names,
            filename,
            lines,
        )
    )
    if filename is None or not filename.endswith(".ndjson"):
        return web.json_response(
            {
                "statusCode": 400,
                "error": "Bad Request",
                "message": f"Invalid file extension {filename}",
            },
            status=400,
        )
    present = {(o["type"], o["id"]) for o in lines} | kb.existing
    successes, errors = [], []
    for obj in lines:
        missing = [r for r in obj.get("references", []) if (r["type"], r["id"]) not in present]
        title = obj.get("attributes", {}).get("title", "")
        if missing:
            errors.append(
                {
                    "id": obj["id"],
                    "type": obj["type"],
                    "title": title,
                    "meta": {"title": title},
                    "error": {
                        "type": "missing_references",
                        "references": [{"type": r["type"], "id": r["id"]} for r in missing],
                    },
                }
            )
        else:
            successes.append(
                {"type": obj["type"], "id": obj["id"], "meta": {"title": title}, "overwrite": True}
            )
    return web.json_response(
        {
            "success": not errors,
            "successCount": len(successes),
            "successResults": successes,
            "errors": errors,
            "warnings": [],
        }
    )


async def _status(request: web.Request) -> web.Response:
    kb = request.app[KB]
    kb.status_polls += 1
    if kb.status_polls <= kb.unavailable_polls:
        return web.json_response({"status": {"overall": {"level": "unavailable"}}}, status=503)
    return web.json_response({"status": {"overall": {"level": "available"}}})


@pytest.fixture
def kibana() -> Iterator[FakeKibana]:
    yield from _serve(FakeKibana())


@pytest.fixture
def kibana_tls(tmp_path: Path) -> Iterator[tuple[FakeKibana, str]]:
    """The fake Kibana over HTTPS with a certificate from a private CA (and that CA)."""
    files = ensure_security_files(tmp_path / "pki")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.node_cert, files.node_key)
    for kb in _serve(FakeKibana(), ctx):
        yield kb, str(files.ca_cert)


def _serve(kb: FakeKibana, ssl_context: ssl.SSLContext | None = None) -> Iterator[FakeKibana]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app[KB] = kb
        app.router.add_post("/api/saved_objects/_import", _import)
        app.router.add_post("/s/{space}/api/saved_objects/_import", _import)
        app.router.add_get("/api/status", _status)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        kb.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        runner_box.append(runner)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield kb
    finally:
        asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_https_kibana_with_a_private_ca_and_credentials_from_the_environment(
    kibana_tls: tuple[FakeKibana, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kb, ca = kibana_tls
    kb.require_auth = "Basic " + base64.b64encode(b"importer:s3cret-pw").decode()
    monkeypatch.setenv("OTEL_AUDIT_KIBANA_USER", "importer")
    monkeypatch.setenv("OTEL_AUDIT_KIBANA_PASSWORD", "s3cret-pw")
    # Without the CA the certificate is not trusted: a clear failure, no secret shown.
    assert main(["kibana", "import", "--url", kb.url]) == 1
    err = capsys.readouterr().err
    assert "cannot reach Kibana" in err and "certificate" in err.lower()
    assert "s3cret-pw" not in err
    monkeypatch.setenv("OTEL_AUDIT_KIBANA_CA_FILE", ca)
    assert main(["kibana", "import", "--url", kb.url]) == 0
    assert len(kb.requests) == 1


def _ndjson_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in render_ndjson().splitlines()]


def test_import_sends_the_objects_as_kibana_expects(
    kibana: FakeKibana, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["kibana", "import", "--url", kibana.url])
    out = capsys.readouterr().out
    assert rc == 0, out
    (req,) = kibana.requests
    assert req.path == "/api/saved_objects/_import"
    assert req.query == {"overwrite": "true"}
    assert req.headers["kbn-xsrf"] == "true"
    assert req.headers["Content-Type"].startswith("multipart/form-data")
    assert req.field_names == ["file"]
    assert req.filename == "otel-audit.ndjson"
    assert req.lines == _ndjson_objects()
    for obj in req.lines:
        assert f"ok    {obj['type']} {obj['id']}" in out
    assert f"imported: {len(req.lines)} ok, 0 failed" in out


def test_space_and_json_output(kibana: FakeKibana, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["kibana", "import", "--url", kibana.url + "/", "--space", "audit team", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert kibana.requests[0].path == "/s/audit team/api/saved_objects/_import"
    assert report["ok"] is True
    assert report["error_count"] == 0
    assert report["success_count"] == len(_ndjson_objects())
    assert {o["status"] for o in report["objects"]} == {"ok"}


def test_object_errors_are_reported_and_fail_the_command(
    kibana: FakeKibana, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    objects = _ndjson_objects()
    broken = next(o for o in objects if o["type"] == "search")
    broken["references"][0]["id"] = "no-such-view"
    path = tmp_path / "objects.ndjson"
    path.write_text("".join(json.dumps(o) + "\n" for o in objects))
    rc = main(["kibana", "import", "--url", kibana.url, "--file", str(path)])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"ERROR search {broken['id']}" in out
    assert "missing_references: index-pattern/no-such-view" in out
    assert f"import FAILED: {len(objects) - 1} ok, 1 failed" in out

    rc = main(["kibana", "import", "--url", kibana.url, "--file", str(path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert report["ok"] is False and report["error_count"] == 1
    (err,) = [o for o in report["objects"] if o["status"] == "error"]
    assert err == {
        "type": "search",
        "id": broken["id"],
        "title": broken["attributes"]["title"],
        "status": "error",
        "error": "missing_references: index-pattern/no-such-view",
    }


def test_basic_auth_and_api_key(
    kibana: FakeKibana, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kibana.require_auth = "Basic " + base64.b64encode(b"elastic:s3cret").decode()
    assert main(["kibana", "import", "--url", kibana.url]) == 1
    assert "HTTP 401" in capsys.readouterr().err
    monkeypatch.setenv("OTEL_AUDIT_KIBANA_PASSWORD", "s3cret")
    assert main(["kibana", "import", "--url", kibana.url, "--user", "elastic"]) == 0

    kibana.require_auth = "ApiKey a2V5OnNlY3JldA=="
    assert main(["kibana", "import", "--url", kibana.url, "--api-key", "a2V5OnNlY3JldA=="]) == 0
    capsys.readouterr()
    rc = main(["kibana", "import", "--url", kibana.url, "--api-key", "k", "--user", "u"])
    assert rc == 2
    assert "not both" in capsys.readouterr().err


def test_request_level_error_message_is_shown(
    kibana: FakeKibana, capsys: pytest.CaptureFixture[str]
) -> None:
    kibana.fail_with = (
        413,
        {
            "statusCode": 413,
            "error": "Request Entity Too Large",
            "message": "Payload content length greater than maximum allowed: 26214400",
        },
    )
    assert main(["kibana", "import", "--url", kibana.url]) == 1
    err = capsys.readouterr().err
    assert "HTTP 413" in err and "maximum allowed" in err


def test_wait_for_kibana_then_import(
    kibana: FakeKibana, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("indexer.kibana.cli.STATUS_POLL_INTERVAL_S", 0.05)
    kibana.unavailable_polls = 2
    assert main(["kibana", "import", "--url", kibana.url, "--wait-s", "30"]) == 0
    assert kibana.status_polls == 3
    assert "waiting for Kibana" in capsys.readouterr().err
    assert len(kibana.requests) == 1


def test_unreachable_kibana_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.collector_build import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert main(["kibana", "import", "--url", url]) == 1
    assert f"cannot reach Kibana at {url}" in capsys.readouterr().err


def test_bad_arguments(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kibana", "import", "--url", "kibana:5601"]) == 2
    assert "must start with http://" in capsys.readouterr().err
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"type": "search", "id": "x"}\nnot json\n')
    assert main(["kibana", "import", "--url", "http://127.0.0.1:1", "--file", str(bad)]) == 2
    assert f"{bad}:2: not JSON" in capsys.readouterr().err


def test_render_check_detects_a_stale_file(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "objects.ndjson"
    assert main(["kibana", "render", "-o", str(path)]) == 0
    assert main(["kibana", "render", "--check", str(path)]) == 0
    path.write_text(path.read_text().replace("Audit overview", "Old title"))
    assert main(["kibana", "render", "--check", str(path)]) == 1
    assert "stale" in capsys.readouterr().out
