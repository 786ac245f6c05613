"""The command line's root: every command registered, one exit-code convention, --version."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from otel_audit.cli import build_parser, main
from otel_audit.exits import Exit

COMMANDS = {
    "schema", "local-es", "keys", "verify-proof", "verify", "prove", "templates", "kibana",
    "serve", "query-api", "query", "trace", "tokens", "demo", "retention", "local-s3",
    "lifecycle", "hold", "restore", "witness", "consistency",
}  # fmt: skip


def test_every_command_is_registered() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == COMMANDS  # type: ignore[arg-type]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"otel-audit {version('otel-audit')}"


def test_usage_and_unavailable_are_told_apart(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path)]) == Exit.OK
    public = str(next(tmp_path.glob("*.pub*")))
    # A bad argument is the caller's to fix ...
    assert main(["verify", "--es-url", "not-a-url", "--public-key", public]) == Exit.USAGE
    assert main(["verify", "--public-key", str(tmp_path / "missing.pem")]) == Exit.USAGE
    # ... while an Elasticsearch that does not answer is unavailability.
    down = ["verify", "--es-url", "http://127.0.0.1:9", "--public-key", public]
    assert main(down) == Exit.UNAVAILABLE
    unreachable = ["templates", "install", "--url", "http://127.0.0.1:9"]
    assert main(unreachable) == Exit.UNAVAILABLE
    assert "cannot reach Elasticsearch at http://127.0.0.1:9" in capsys.readouterr().err
    api = ["query", "--api-url", "http://127.0.0.1:9", "--token", "t"]
    assert main(api) == Exit.UNAVAILABLE
