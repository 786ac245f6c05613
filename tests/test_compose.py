"""docker-compose.yml, the Dockerfile and docker/ checked against the code they run.

There is no Docker engine here, so these tests read the files: pinned image versions,
environment variable names, mounted paths, ports, the commands the containers run (parsed
by the real CLI), and the compose Collector config (validated by the real Collector).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from indexer.local_es.config import ES_VERSION
from otel_audit.cli import build_parser
from receiver.config import ReceiverConfig, load_config, parse_endpoint
from tests.support.collector_build import MAIN_CONFIG, ensure_collector, validate_config

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SOURCE_DIRS = ("otel_audit", "receiver", "indexer", "demo")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, container path) of each volume entry."""
    out = []
    for entry in service.get("volumes") or []:
        source, target, *_ = str(entry).split(":")
        out.append((source, target))
    return out


def _bind_target(service: dict[str, Any], host_path: str) -> str:
    for source, target in _mounts(service):
        if source == host_path:
            return target
    raise AssertionError(f"{host_path} is not mounted")


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _instruction(name: str) -> list[str]:
    return [rest for word, rest in _dockerfile() if word == name]


def _builder_release() -> str:
    manifest = yaml.safe_load((REPO / "collector-config" / "builder-config.yaml").read_text())
    return str(manifest["dist"]["version"])


SETUP_SCRIPT = REPO / "docker" / "setup.sh"
IMAGE = "otel-audit:local"


def _receiver_config() -> ReceiverConfig:
    """docker/receiver.yaml: the base of the config the setup job writes for the receiver."""
    receiver = _services()["receiver"]
    _bind_target(_services()["setup"], "./docker/receiver.yaml")
    return load_config(REPO / "docker" / "receiver.yaml", env=_env(receiver))


def _script_commands() -> list[list[str]]:
    """The ``otel-audit`` commands docker/setup.sh runs (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", SETUP_SCRIPT.read_text(encoding="utf-8"))
    for name, default in re.findall(r'^([A-Z_]+)="\$\{[A-Z_]+:-([^}]+)\}"', text, re.M):
        text = text.replace(f"${name}", default)
    out = []
    for line in text.splitlines():
        words = shlex.split(line.strip(), comments=True)
        if words and words[0] == "otel-audit":
            out.append(words[: words.index(">")] if ">" in words else words)
    return out


def _default_ports() -> dict[str, int]:
    defaults = ReceiverConfig()
    return {
        key: parse_endpoint(getattr(defaults, key), key)[1]
        for key in ("grpc_endpoint", "http_endpoint", "query_api_endpoint")
    }


def _commands() -> list[tuple[str, list[str]]]:
    """(service, argv) of every ``otel-audit`` command a container runs."""
    image_cmd = _instruction("CMD")[-1]
    found: list[tuple[str, list[str]]] = [("Dockerfile CMD", yaml.safe_load(image_cmd))]
    for name, service in _services().items():
        command = service.get("command")
        if not command:
            continue
        if isinstance(command, str):
            command = shlex.split(command)
        if command == ["sh", "/etc/otel-audit/setup.sh"]:
            assert _bind_target(service, "./docker/setup.sh") == command[1]
            found.extend((name, argv) for argv in _script_commands())
        elif command[:2] == ["sh", "-ec"]:
            for line in command[2].splitlines():
                words = shlex.split(line)
                if words and words[0] == "otel-audit":
                    found.append((name, words))
        elif command[0] == "otel-audit":
            found.append((name, list(command)))
    return found


def test_images_are_pinned_to_the_versions_we_test() -> None:
    services = _services()
    assert services["elasticsearch"]["image"] == (
        f"docker.elastic.co/elasticsearch/elasticsearch:{ES_VERSION}"
    )
    assert services["kibana"]["image"] == f"docker.elastic.co/kibana/kibana:{ES_VERSION}"
    release = _builder_release()
    assert services["collector"]["image"] == f"otel/opentelemetry-collector-contrib:{release}"
    manifest = (REPO / "collector-config" / "builder-config.yaml").read_text()
    assert f"otlpreceiver v{release}" in manifest


def test_elasticsearch_and_kibana_settings() -> None:
    services = _services()
    es = _env(services["elasticsearch"])
    assert es["discovery.type"] == "single-node"
    assert es["xpack.security.enabled"] == "false"
    assert re.fullmatch(r"-Xms(\d+)m -Xmx\1m", es["ES_JAVA_OPTS"])
    assert _env(services["kibana"])["ELASTICSEARCH_HOSTS"] == "http://elasticsearch:9200"
    for name in ("elasticsearch", "kibana"):
        assert services[name]["healthcheck"]["test"], name
    # The receiver's comes from the image.
    assert "healthcheck" not in services["receiver"]
    assert _instruction("HEALTHCHECK")
    kibana_urls = [argv[argv.index("--url") + 1] for _, argv in _commands() if "--url" in argv]
    assert kibana_urls == ["http://kibana:5601"]


def test_depends_on_names_existing_services() -> None:
    services = _services()
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert spec["condition"] in conditions
            if spec["condition"] == "service_healthy":
                dep_service = services[dep]
                has_check = "healthcheck" in dep_service and not dep_service["healthcheck"].get(
                    "disable"
                )
                built_here = dep_service.get("image") == IMAGE
                assert has_check or built_here, f"{dep} has no health check for {name} to await"


def test_named_volumes_are_declared_and_bind_mounts_exist() -> None:
    declared = set(_compose().get("volumes") or {})
    for name, service in _services().items():
        for source, target in _mounts(service):
            assert target.startswith("/"), (name, target)
            if source.startswith(("./", "/")):
                assert (REPO / source).is_file(), f"{name} mounts {source}, not in the repo"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_environment_names_exist_in_the_code() -> None:
    code = "\n".join(
        p.read_text(encoding="utf-8") for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py")
    )
    collector_configs = "\n".join(
        p.read_text(encoding="utf-8") for p in (REPO / "collector-config").glob("*.yaml")
    )
    checked = 0
    for name, service in _services().items():
        for var in _env(service):
            if not var.startswith("OTEL_AUDIT_"):
                continue
            if name == "collector":
                assert f"${{env:{var}" in collector_configs, (
                    f"{var} is not read by collector-config"
                )
            else:
                assert var in code, f"{name}: {var} appears nowhere in the code"
            checked += 1
    assert checked >= 4


def test_collector_gets_every_variable_its_configs_require() -> None:
    collector = _services()["collector"]
    env = _env(collector)
    texts = [
        (REPO / source).read_text(encoding="utf-8")
        for source, _ in _mounts(collector)
        if source.startswith("./")
    ]
    required = {m for text in texts for m in re.findall(r"\$\{env:([A-Z0-9_]+)\}", text)}
    assert required, "no ${env:...} found in the Collector configs"
    assert required <= set(env), f"unset: {required - set(env)}"
    args = collector["command"]
    for source, target in _mounts(collector):
        if source.endswith(".yaml"):
            assert f"--config={target}" in args, f"{source} is mounted but not loaded"
    assert args[0] == f"--config={_bind_target(collector, './collector-config/otelcol-audit.yaml')}"


def test_ports_match_the_receiver_config() -> None:
    defaults = _default_ports()
    config = _receiver_config()
    services = _services()
    receiver = services["receiver"]
    exposed = {int(p) for p in receiver.get("expose", [])}
    exposed |= {int(str(p).rsplit(":", 1)[-1]) for p in receiver.get("ports", [])}
    image_ports = {int(p) for line in _instruction("EXPOSE") for p in line.split()}
    for key, port in defaults.items():
        host, actual = parse_endpoint(getattr(config, key), key)
        assert actual == port, f"{key}: compose config uses {actual}, the default is {port}"
        assert host == "0.0.0.0", f"{key} must listen on the container network"
        assert port in exposed, f"{key} port {port} is not exposed by the receiver service"
        assert port in image_ports, f"{key} port {port} is not in the Dockerfile's EXPOSE"
    grpc = defaults["grpc_endpoint"]
    assert _env(services["collector"])["OTEL_AUDIT_RECEIVER_ENDPOINT"] == f"receiver:{grpc}"
    health = " ".join(_instruction("HEALTHCHECK"))
    assert f"http://127.0.0.1:{defaults['http_endpoint']}/healthz" in health
    demo = next(argv for name, argv in _commands() if name == "demo")
    assert demo[demo.index("--otlp-endpoint") + 1] == "collector:4317"


def test_receiver_state_paths_are_on_the_state_volume() -> None:
    config = _receiver_config()
    receiver = _services()["receiver"]
    state = dict((t, s) for s, t in _mounts(receiver))
    assert state.get("/var/lib/otel-audit") == "otel-audit-state"
    assert config.spool_dir.startswith("/var/lib/otel-audit/")
    integrity = config.sections["integrity"]
    assert integrity.state_dir.startswith("/var/lib/otel-audit/")
    assert integrity.generate_dev_key is False
    setup = _services()["setup"]
    assert ("otel-audit-state", "/var/lib/otel-audit") in _mounts(setup)
    key_dir = next(
        argv[argv.index("--out") + 1]
        for name, argv in _commands()
        if argv[1:3] == ["keys", "generate"]
    )
    assert integrity.key_file == f"{key_dir}/signing-key.pem"


def test_the_receiver_runs_the_config_the_setup_job_writes_as_a_non_root_user() -> None:
    assert _instruction("FROM")[-1] == "python:3.11-slim"  # earlier stages only build wheels
    cmd = yaml.safe_load(_instruction("CMD")[-1])
    assert cmd[:2] == ["otel-audit", "serve"]
    script = SETUP_SCRIPT.read_text(encoding="utf-8")
    state = re.search(r'STATE_DIR="\$\{STATE_DIR:-([^}]+)\}"', script)
    base = re.search(r'BASE_CONFIG="\$\{BASE_CONFIG:-([^}]+)\}"', script)
    assert state and base
    setup = _services()["setup"]
    assert _bind_target(setup, "./docker/receiver.yaml") == base.group(1)
    assert ("otel-audit-state", state.group(1)) in _mounts(setup)
    receiver = _services()["receiver"]
    config_path = f"{state.group(1)}/receiver.yaml"
    assert receiver["command"] == ["otel-audit", "serve", "--config", config_path]
    assert ("otel-audit-state", state.group(1)) in _mounts(receiver)
    users = _instruction("USER")
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert "ARG EXTRAS=server" in [f"ARG {a}" for a in _instruction("ARG")]
    assert any('pip install ".[${EXTRAS}]"' in r for r in _instruction("RUN"))


def test_dockerfile_copies_every_package_and_dockerignore_keeps_them() -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    include = re.search(r"^include = \[(.*)\]$", pyproject, re.M)
    assert include
    packages = {p.strip().strip('"').rstrip("*") for p in include.group(1).split(",")}
    copied = {line.split()[0] for line in _instruction("COPY") if not line.startswith("--from=")}
    assert packages <= copied, f"not copied into the image: {packages - copied}"
    for source in copied:
        for part in source.split():
            assert (REPO / part).exists(), part
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not copied & ignored, f".dockerignore drops {copied & ignored}"


def test_every_container_command_parses_with_the_cli() -> None:
    parser = build_parser()
    commands = _commands()
    assert {name for name, _ in commands} >= {"Dockerfile CMD", "setup", "kibana-setup", "demo"}
    for name, argv in commands:
        assert argv[0] == "otel-audit"
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{name}: 'otel-audit {' '.join(argv[1:])}' is not a valid command")
        assert callable(args.handler), name


@pytest.mark.collector
def test_compose_collector_config_is_valid() -> None:
    collector = _services()["collector"]
    configs = [REPO / source for source, _ in _mounts(collector) if source.endswith(".yaml")]
    assert configs[0] == MAIN_CONFIG
    result = validate_config(ensure_collector(), configs, env=_env(collector))
    assert result.ok, result.message


def test_the_image_is_built_once_and_run_by_name() -> None:
    services = _services()
    builders = [name for name, svc in services.items() if "build" in svc]
    assert builders == ["setup"], f"only the setup job builds the image, not {builders}"
    assert services["setup"]["image"] == IMAGE
    users = [name for name, svc in services.items() if svc.get("image") == IMAGE]
    assert set(users) >= {"setup", "kibana-setup", "receiver", "collector-volume-init", "demo"}
    for name in users:
        if name != "setup":
            assert services[name].get("pull_policy") == "never", f"{name} would try to pull it"
    # One image serves the demo traffic generator too.
    assert services["setup"]["build"]["args"]["EXTRAS"] == "demo"


def test_the_console_gets_the_signing_keys_public_half() -> None:
    config = _receiver_config()
    integrity = config.sections["integrity"]
    console = config.sections["console"]
    assert console.public_keys == (integrity.key_file.replace(".pem", ".pub.pem"),)


@pytest.mark.integration
def test_setup_script_makes_a_reader_token_once(es_url: str, tmp_path: Path) -> None:
    """docker/setup.sh for real (outside a container): the receiver's config it writes
    accepts the token it wrote, and a second run changes neither."""
    import os
    import subprocess
    import sys

    from indexer.query.auth import Authenticator
    from indexer.query.config import QueryConfig

    env = {
        **os.environ,
        "STATE_DIR": str(tmp_path),
        "BASE_CONFIG": str(REPO / "docker" / "receiver.yaml"),
        "OTEL_AUDIT_ES_URL": es_url,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for _ in range(2):
        run = subprocess.run(
            ["sh", str(SETUP_SCRIPT)], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        if _ == 0:
            token = (tmp_path / "reader-token").read_text().strip()
            first = (tmp_path / "receiver.yaml").read_text()
    assert (tmp_path / "receiver.yaml").read_text() == first
    assert token.startswith("oat_")
    assert (tmp_path / "reader-token").stat().st_mode & 0o077 == 0
    assert (tmp_path / "keys" / "signing-key.pem").exists()
    config = load_config(tmp_path / "receiver.yaml", env={})
    query = config.sections["query"]
    assert isinstance(query, QueryConfig)
    principal = Authenticator(query.tokens).authorize(f"Bearer {token}", "reader")
    assert principal.subject == "auditor"
