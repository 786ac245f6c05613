"""`make dist`: the wheel a service installs needs only the OpenTelemetry API and SDK."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Importable by a service with nothing but the OTel API and SDK installed.
_SERVICE = """
import sys
SERVER = {"elasticsearch", "elastic_transport", "aiohttp", "grpc", "google", "yaml",
          "prometheus_client", "orjson", "rfc8785", "cryptography", "otel_audit_native"}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in SERVER:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocker())
sys.path.insert(0, sys.argv[1])
import otel_audit
assert otel_audit.__file__.startswith(sys.argv[1]), otel_audit.__file__
from otel_audit import audit_event
from otel_audit.testing import capture_audit_events
with capture_audit_events() as events:
    audit_event(action="invoice.update", category="data_change", outcome="success",
                actor_id="u-1", actor_type="user", resource_type="invoice", resource_id="i-1")
assert len(events) == 1, events
from otel_audit.cli import main
sys.exit(main(["--version"]))
"""


def test_service_wheel_requires_only_the_otel_api_and_sdk(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, REPO],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("otel_audit-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in zf.read(meta).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
        zf.extractall(tmp_path / "site")
    unconditional = sorted(r.split("<")[0].split(">")[0] for r in requires if "extra ==" not in r)
    assert unconditional == ["opentelemetry-api", "opentelemetry-sdk"]
    # The console is served from the installed package: no build step, nothing fetched.
    for asset in ("index.html", "console.js", "verify.js", "console.css"):
        assert f"indexer/query/console/static/{asset}" in names
    assert "otel_audit/schema/audit_event.v1.json" in names
    run = subprocess.run(
        [sys.executable, "-c", _SERVICE, str(tmp_path / "site")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    # The service code works; the command line says what to install instead of a traceback.
    assert run.returncode == 3, run.stderr
    assert "pip install 'otel-audit[server]'" in run.stderr
