"""The local Elasticsearch manager: settings, error paths, and one real start/stop cycle."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from indexer.local_es import (
    ES_VERSION,
    ChecksumMismatchError,
    LocalElasticsearch,
    LocalEsConfig,
    LocalEsConfigError,
    MissingToolError,
    PortInUseError,
    StopError,
)
from indexer.local_es import cli as local_es_cli
from indexer.local_es.config import ROOT_CACHE_DIR, default_cache_dir
from indexer.local_es.dist import (
    ensure_distribution,
    extract_zip,
    file_sha512,
    find_java,
    find_mvn,
    java_major,
    verify_checksum,
)
from indexer.local_es.errors import DistributionError
from indexer.local_es.node import NodeLayout, es_process_alive, node_settings
from indexer.local_es.probe import PortState, port_accepts, probe
from indexer.local_es.security import security_settings
from indexer.local_es.state import wipe_project_state
from tests.support.collector_build import free_port

CYCLE_PORT = 9277


@pytest.fixture(autouse=True)
def _own_node_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    # OTEL_AUDIT_LOCAL_ES_DATA names the session node's directory: a test node that
    # inherited it would share (and could stop) the session node through its pid file.
    monkeypatch.delenv("OTEL_AUDIT_LOCAL_ES_DATA", raising=False)


@pytest.fixture
def listener() -> Iterator[int]:
    """A plain TCP listener that never speaks HTTP."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def chatty_listener() -> Iterator[int]:
    """A TCP server that answers every connection with a non-HTTP banner."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-not-elasticsearch\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        sock.close()


def _run_cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="otel-audit")
    local_es_cli.register(parser.add_subparsers(required=True))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = args.handler(args)
    return rc, out.getvalue()


# -- settings -------------------------------------------------------------------


def test_config_defaults_derive_paths_from_port(tmp_path: Path) -> None:
    cfg = LocalEsConfig.from_env({"OTEL_AUDIT_CACHE_DIR": str(tmp_path)})
    assert cfg.url == "http://127.0.0.1:9200"
    assert cfg.http_port == 9200
    assert cfg.heap == "512m"
    assert cfg.start_timeout_s == 120
    assert cfg.node_dir == tmp_path / "nodes" / "9200"
    other = LocalEsConfig.from_env(
        {"OTEL_AUDIT_CACHE_DIR": str(tmp_path), "OTEL_AUDIT_ES_URL": "http://localhost:9211/"}
    )
    assert other.node_dir == tmp_path / "nodes" / "9211"
    assert other.base_url == "http://localhost:9211"
    assert other.bind_host == "127.0.0.1"


def test_flags_override_environment(tmp_path: Path) -> None:
    env = {
        "OTEL_AUDIT_ES_URL": "http://127.0.0.1:9201",
        "OTEL_AUDIT_LOCAL_ES_DATA": str(tmp_path / "env-data"),
        "OTEL_AUDIT_LOCAL_ES_HEAP": "1g",
        "OTEL_AUDIT_LOCAL_ES_START_TIMEOUT_S": "30",
        "OTEL_AUDIT_CACHE_DIR": str(tmp_path / "cache"),
    }
    from_env = LocalEsConfig.from_env(env)
    assert (from_env.http_port, from_env.heap, from_env.start_timeout_s) == (9201, "1g", 30)
    assert from_env.node_dir == tmp_path / "env-data"
    flags = LocalEsConfig.from_env(
        env,
        url="http://127.0.0.1:9202",
        data_dir=tmp_path / "flag-data",
        heap="256m",
        start_timeout_s=5,
    )
    assert (flags.http_port, flags.heap, flags.start_timeout_s) == (9202, "256m", 5)
    assert flags.node_dir == tmp_path / "flag-data"
    assert flags.resolved_cache_dir == tmp_path / "cache"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"url": "ftp://127.0.0.1:9200"}, "http://"),
        ({"url": "http://127.0.0.1:9200/prefix"}, "path"),
        ({"url": "http://127.0.0.1:notaport"}, "not a valid URL"),
        ({"heap": "lots"}, "OTEL_AUDIT_LOCAL_ES_HEAP"),
        ({"start_timeout_s": 0}, "timeout"),
    ],
)
def test_bad_settings_name_the_problem(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(LocalEsConfigError, match=needle):
        LocalEsConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_timeout_env_names_the_variable() -> None:
    with pytest.raises(LocalEsConfigError, match="OTEL_AUDIT_LOCAL_ES_START_TIMEOUT_S"):
        LocalEsConfig.from_env({"OTEL_AUDIT_LOCAL_ES_START_TIMEOUT_S": "soon"})


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_cache_dir({"OTEL_AUDIT_CACHE_DIR": str(tmp_path)}) == tmp_path
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_cache_dir({}) == ROOT_CACHE_DIR
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == (
        tmp_path / "otel-audit" / "elasticsearch"
    )


def test_node_settings_cover_what_the_project_relies_on(tmp_path: Path) -> None:
    settings = node_settings(
        NodeLayout(tmp_path),
        node_name="otel-audit-9233",
        bind_host="127.0.0.1",
        http_port=9233,
        transport_port=9333,
        security=security_settings(False),
    )
    assert settings["http.port"] == "9233"
    assert settings["transport.port"] == "9333"
    assert settings["network.host"] == "127.0.0.1"
    assert settings["discovery.type"] == "single-node"
    assert settings["xpack.security.enabled"] == "false"
    assert settings["cluster.routing.allocation.disk.threshold_enabled"] == "false"
    assert settings["action.destructive_requires_name"] == "false"
    assert settings["path.repo"] == str(tmp_path / "repo")


@pytest.mark.parametrize("host", ["10.1.2.3", "example.com", "0.0.0.0"])
def test_non_loopback_url_is_refused(host: str, tmp_path: Path) -> None:
    node = LocalElasticsearch(url=f"http://{host}:9200", cache_dir=tmp_path, progress=None)
    with pytest.raises(LocalEsConfigError, match="not a loopback address"):
        node.ensure_started()
    assert not any(tmp_path.iterdir())  # refused before touching anything


def test_cli_refuses_non_loopback_with_exit_code_2(tmp_path: Path) -> None:
    rc, out = _run_cli(
        "local-es", "start", "--json", "--url", "http://10.1.2.3:9200", "--cache-dir", str(tmp_path)
    )
    assert rc == 2
    payload = json.loads(out)
    assert payload["ok"] is False
    assert "loopback" in payload["message"]


# -- tools ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_381"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("garbage", None),
    ],
)
def test_java_major_parsing(output: str, major: int | None) -> None:
    assert java_major(output) == major


def test_missing_java_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MissingToolError, match="apt-get install openjdk-17-jre-headless"):
        find_java()


def test_old_java_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MissingToolError, match=r"needs java 17\+, but .* is java 11"):
        find_java()


def test_missing_mvn_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError, match=r"apt-get install .*maven"):
        find_mvn()
    with pytest.raises(MissingToolError, match="mvn"):
        ensure_distribution(tmp_path / "cache")


def test_java_found_on_this_machine() -> None:
    java = find_java()
    assert java.major >= 17
    assert (java.home / "bin" / "java").is_file()


# -- distribution ---------------------------------------------------------------


def test_checksum_mismatch_is_detected_and_file_removed(tmp_path: Path) -> None:
    archive = tmp_path / f"elasticsearch-{ES_VERSION}.zip"
    archive.write_bytes(b"not the real distribution")
    actual = file_sha512(archive)
    with pytest.raises(ChecksumMismatchError, match="checksum mismatch") as info:
        ensure_distribution(tmp_path)
    assert info.value.actual == actual
    assert not archive.exists()
    assert not (tmp_path / f"elasticsearch-{ES_VERSION}").exists()


def test_verify_checksum_accepts_matching_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    verify_checksum(path, file_sha512(path))
    assert path.exists()


def test_extract_zip_keeps_modes_and_refuses_escapes(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("pkg/bin/tool")
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(info, "#!/bin/sh\n")
    extract_zip(archive, tmp_path / "out")
    assert os.access(tmp_path / "out" / "pkg" / "bin" / "tool", os.X_OK)

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escaped", "x")
    with pytest.raises(DistributionError, match="escapes"):
        extract_zip(evil, tmp_path / "out2")
    assert not (tmp_path / "escaped").exists()


# -- ports ----------------------------------------------------------------------


def test_probe_free_port() -> None:
    assert probe("127.0.0.1", free_port()).state is PortState.FREE


def test_port_taken_by_plain_listener_is_a_clear_error(listener: int, tmp_path: Path) -> None:
    node = LocalElasticsearch(url=f"http://127.0.0.1:{listener}", cache_dir=tmp_path, progress=None)
    with pytest.raises(PortInUseError, match=f"port {listener} is in use") as info:
        node.ensure_started()
    assert info.value.port == listener


def test_port_taken_by_non_http_server(chatty_listener: int, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{chatty_listener}"
    node = LocalElasticsearch(url=url, cache_dir=tmp_path, progress=None)
    with pytest.raises(PortInUseError, match=str(chatty_listener)):
        node.ensure_started()
    status = node.status()
    assert not status.running
    assert str(chatty_listener) in status.detail
    with pytest.raises(StopError, match="did not start"):
        node.stop()


def test_status_and_stop_of_a_stopped_node(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = LocalElasticsearch(url=url, cache_dir=tmp_path, progress=None)
    assert node.stop() is False
    status = node.status()
    assert (status.running, status.managed, status.pid) == (False, False, None)
    rc, out = _run_cli("local-es", "status", "--json", "--url", url, "--cache-dir", str(tmp_path))
    assert rc == 3
    assert json.loads(out)["state"] == "stopped"
    rc, out = _run_cli("local-es", "stop", "--json", "--url", url, "--cache-dir", str(tmp_path))
    assert rc == 0
    assert json.loads(out) == {"ok": True, "stopped": False, "url": url}


# -- the real server ------------------------------------------------------------


@pytest.mark.integration
def test_start_status_stop_cycle() -> None:
    if port_accepts("127.0.0.1", CYCLE_PORT):
        pytest.fail(f"port {CYCLE_PORT} is busy; this test needs it for its own node")
    # Not under pytest's tmp_path: that is private to the invoking user, and under
    # root the node runs as an unprivileged account that must reach its directory.
    data_dir = Path(tempfile.mkdtemp(prefix=f"otel-audit-es-{CYCLE_PORT}-"))
    url = f"http://127.0.0.1:{CYCLE_PORT}"
    try:
        with LocalElasticsearch(url=url, data_dir=data_dir, heap="384m") as node:
            status = node.status()
            assert status.running and status.managed
            assert status.version == ES_VERSION
            assert status.health in ("green", "yellow")
            assert status.pid is not None and es_process_alive(status.pid, data_dir)
            pid = status.pid

            assert node.ensure_started() is False  # idempotent in-process
            common = ("--url", url, "--data-dir", str(data_dir))
            rc, out = _run_cli("local-es", "start", "--json", *common)
            assert rc == 0
            assert json.loads(out)["started"] is False  # and through the CLI

            client = Elasticsearch(url, request_timeout=30)
            client.indices.create(index="audit-cycle")
            client.close()

            rc, out = _run_cli("local-es", "stop", "--json", *common)
            assert (rc, json.loads(out)["stopped"]) == (0, True)
            assert not port_accepts("127.0.0.1", CYCLE_PORT)
            assert not es_process_alive(pid, data_dir)
        # leaving the block stops again: a no-op on a stopped node
        assert node.stop() is False
        assert node.status().running is False
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.integration
def test_clean_es_wipes_project_state(clean_es: Elasticsearch) -> None:
    assert not clean_es.indices.exists(index="audit-*", allow_no_indices=False)
    clean_es.cluster.put_component_template(
        name="otel-audit-test-settings", template={"settings": {"number_of_replicas": 0}}
    )
    clean_es.indices.put_index_template(
        name="otel-audit-test", index_patterns=["audit-test-*"],
        composed_of=["otel-audit-test-settings"],
    )  # fmt: skip
    clean_es.indices.create(index="audit-test-1", aliases={"audit-test": {}})
    clean_es.indices.create(index="unrelated-index")
    try:
        wipe_project_state(clean_es)
        assert not clean_es.indices.exists(index="audit-test-1")
        assert not clean_es.indices.exists_index_template(name="otel-audit-test")
        assert not clean_es.cluster.exists_component_template(name="otel-audit-test-settings")
        assert clean_es.indices.exists(index="unrelated-index")  # not ours: kept
    finally:
        clean_es.indices.delete(index="unrelated-index")
