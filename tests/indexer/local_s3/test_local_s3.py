"""``otel-audit local-s3``: the pinned s3proxy from Maven Central, started, used, stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from indexer.lifecycle.store import s3_client
from indexer.local_s3 import LocalS3Config, LocalS3Error
from indexer.local_s3.manager import JAR_NAME, ensure_jar
from tests.support.lifecycle_harness import free_port

ROOT = Path(__file__).resolve().parents[3]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_audit.cli", "local-s3", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.integration
@pytest.mark.lifecycle
def test_start_use_status_stop(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_AUDIT_S3_URL": url,
           "OTEL_AUDIT_LOCAL_S3_DATA": str(tmp_path / "server")}  # fmt: skip
    started = _cli("start", "--bucket", "archive-test", "--json", env=env)
    try:
        assert started.returncode == 0, started.stderr
        assert json.loads(started.stdout)["started"] is True
        # Reused, not started twice.
        again = _cli("start", "--json", env=env)
        assert json.loads(again.stdout)["started"] is False
        status = json.loads(_cli("status", "--json", env=env).stdout)
        assert status["state"] == "running" and status["managed"] is True

        cfg = LocalS3Config.from_env(env)
        client = s3_client(
            endpoint_url=url,
            aws_access_key_id=cfg.access_key_id,
            aws_secret_access_key=cfg.secret_access_key,
        )
        client.put_object(Bucket="archive-test", Key="a/b.json", Body=b"{}")
        assert client.get_object(Bucket="archive-test", Key="a/b.json")["Body"].read() == b"{}"
        # Signatures are checked: a wrong secret is refused.
        wrong = s3_client(endpoint_url=url, aws_access_key_id=cfg.access_key_id,
                          aws_secret_access_key="wrong")  # fmt: skip
        with pytest.raises(Exception, match=r"SignatureDoesNotMatch|403|Forbidden"):
            wrong.get_object(Bucket="archive-test", Key="a/b.json")
    finally:
        stopped = _cli("stop", "--json", env=env)
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["stopped"] is True
    assert _cli("status", env=env).returncode == 3


def test_a_jar_with_the_wrong_checksum_is_refused_and_removed(tmp_path: Path) -> None:
    (tmp_path / JAR_NAME).write_bytes(b"not the jar")
    with pytest.raises(LocalS3Error, match="checksum mismatch"):
        ensure_jar(tmp_path, lambda _m: None)
    assert not (tmp_path / JAR_NAME).exists()


def test_a_remote_url_is_not_started() -> None:
    from indexer.local_s3 import LocalS3, LocalS3ConfigError

    with pytest.raises(LocalS3ConfigError, match="loopback"):
        LocalS3(config=LocalS3Config(url="http://10.1.2.3:9290")).ensure_started()
