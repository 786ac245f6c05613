"""Receiver configuration: every testdata file loads or fails naming its key and file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from indexer.es_client import EsConnection
from receiver import config as config_module
from receiver.config import (
    ConfigError,
    ReceiverConfig,
    config_as_dict,
    load_config,
    parse_endpoint,
)

TESTDATA = Path(__file__).parent / "testdata"


def test_defaults_listen_on_loopback_with_spec_limits() -> None:
    config = load_config(env={})
    assert config.grpc_endpoint == "127.0.0.1:4317"
    assert config.http_endpoint == "127.0.0.1:4318"
    assert config.max_request_bytes == 64 * 1024 * 1024
    assert config.max_inflight_bytes >= config.max_request_bytes
    assert config.consumer == "ingest"
    assert config.source == "defaults"


def test_good_file_sets_every_key() -> None:
    config = load_config(TESTDATA / "good.yaml", env={})
    assert config.grpc_endpoint == "0.0.0.0:4317"
    assert parse_endpoint(config.http_endpoint) == ("::1", 4318)
    assert config.admin_endpoint == "127.0.0.1:9464"
    assert config.max_request_bytes == 32 * 1024 * 1024
    assert config.overload_retry_after_s == 2.0 and isinstance(config.overload_retry_after_s, float)
    assert EsConnection.from_config(config).urls == [
        "https://es-1.internal:9200",
        "https://es-2.internal:9200",
    ]
    assert EsConnection.from_config(config).client_options()["basic_auth"] == (
        "otel-audit-writer",
        "correct horse battery staple",
    )
    assert config.spool_dir == "/var/lib/otel-audit/spool"
    assert (config.shards, config.replicas, config.refresh_interval_s) == (3, "1", 5.0)
    assert config.wait_for_active_shards == "all"
    assert (config.bulk_max_docs, config.bulk_flush_interval_ms) == (500, 20)
    assert (config.bulk_max_bytes, config.bulk_timeout_s) == (4 * 1024 * 1024, 7.5)
    assert (config.max_inflight_bulks, config.retry_after_s) == (3, 4.0)
    assert config.max_event_age_days == 90
    assert config.shutdown_timeout_s == 15.0 and config.log_level == "debug"
    assert parse_endpoint(config.query_api_endpoint) == ("0.0.0.0", 8080)
    assert (config.consumer, config.spans_consumer) == ("null_sink", "none")
    assert config.source.endswith("good.yaml")
    keys = {f.name for f in dataclasses.fields(ReceiverConfig)} - {"sections", "source"}
    text = (TESTDATA / "good.yaml").read_text()
    assert all(f"{key}:" in text for key in keys), "good.yaml must set every key"


def test_empty_file_is_all_defaults() -> None:
    assert load_config(TESTDATA / "empty.yaml", env={}) == load_config(env={})


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("bad_unknown_key.yaml", "max_request_size: unknown key"),
        ("bad_type.yaml", "max_request_bytes: expected int, got str"),
        ("bad_bool_as_int.yaml", "bulk_max_docs: expected int, got bool"),
        ("bad_port.yaml", "http_endpoint: port 70000 is outside 0..65535"),
        ("bad_port_text.yaml", "grpc_endpoint: port 'grpc' is not a number"),
        ("bad_negative.yaml", "bulk_flush_interval_ms: must not be negative"),
        ("bad_inflight.yaml", "max_inflight_bytes: must be at least max_request_bytes"),
        ("bad_log_level.yaml", "log_level: 'verbose' is not one of"),
        ("bad_not_mapping.yaml", "the top level must be a mapping"),
        ("bad_yaml.yaml", "not valid YAML"),
        ("bad_es_credentials.yaml", "es_api_key and es_username/es_password: give one"),
        ("bad_es_ca_file.yaml", "es_ca_file: '/nonexistent/ca.pem' is not a readable file"),
        ("bad_es_url.yaml", "es_url: 'es.internal:9200' must start with http"),
    ],
)
def test_bad_files_name_the_key_and_the_file(name: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TESTDATA / name, env={})
    message = str(info.value)
    assert name in message
    assert words in message


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_config(tmp_path / "nope.yaml", env={})


def test_environment_overrides_file_and_flags_override_both() -> None:
    env = {
        "OTEL_AUDIT_ES_URL": "https://es.example:9243",
        "OTEL_AUDIT_MAX_REQUEST_BYTES": "1_048_576",
        "OTEL_AUDIT_SHUTDOWN_TIMEOUT_S": "2.5",
        "OTEL_AUDIT_LOG_LEVEL": "warning",
        "OTEL_AUDIT_UNRELATED_THING": "ignored",
    }
    config = load_config(TESTDATA / "good.yaml", env=env, overrides={"log_level": "error"})
    assert config.es_url == "https://es.example:9243"
    assert config.max_request_bytes == 1024 * 1024
    assert config.shutdown_timeout_s == 2.5
    assert config.log_level == "error"
    assert config.bulk_max_docs == 500  # from the file


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"OTEL_AUDIT_BULK_MAX_DOCS.*'many'"):
        load_config(env={"OTEL_AUDIT_BULK_MAX_DOCS": "many"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:4317", ("127.0.0.1", 4317)),
        (":4317", ("0.0.0.0", 4317)),
        ("[::]:0", ("::", 0)),
        ("receiver:4318", ("receiver", 4318)),
    ],
)
def test_endpoints(value: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(value) == expected


@pytest.mark.parametrize("value", ["4317", "::1:4317", "[::1:4317", "host:-1", "host:"])
def test_bad_endpoints(value: str) -> None:
    with pytest.raises(ValueError, match="grpc_endpoint"):
        parse_endpoint(value, "grpc_endpoint")


@dataclasses.dataclass(frozen=True)
class _Inner:
    depth: int = 1


@dataclasses.dataclass(frozen=True)
class _Section:
    key_file: str = "key.pem"
    block_max_events: int = 1000
    enabled: bool = True
    tags: tuple[str, ...] = ()
    inner: _Inner = _Inner()

    def validate(self) -> None:
        if self.block_max_events < 1:
            raise ValueError("block_max_events: must be at least 1")


SECTIONS = {**config_module.SECTIONS, "testsection": _Section}


@pytest.fixture
def section() -> str:
    return "testsection"


def test_registered_section_loads_with_defaults_file_and_env(section: str, tmp_path: Path) -> None:
    assert load_config(env={}, sections=SECTIONS).section(section, _Section) == _Section()
    path = tmp_path / "c.yaml"
    path.write_text(
        "testsection:\n  key_file: /k.pem\n  tags: [a, b]\n  inner:\n    depth: 3\n"
        "grpc_endpoint: 127.0.0.1:1\n"
    )
    env = {"OTEL_AUDIT_TESTSECTION__ENABLED": "false", "OTEL_AUDIT_TESTSECTION__TAGS": "x,y"}
    config = load_config(path, env=env, sections=SECTIONS)
    value = config.section(section, _Section)
    assert value.key_file == "/k.pem" and value.inner == _Inner(3)
    assert value.enabled is False and value.tags == ("x", "y")
    assert config.grpc_endpoint == "127.0.0.1:1"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("testsection:\n  key_fle: x\n", "testsection.key_fle: unknown key"),
        ("testsection:\n  block_max_events: 0\n", "testsection.block_max_events: must be at least"),
        ("testsection:\n  inner:\n    depth: x\n", "testsection.inner.depth: expected int"),
        ("testsection: 3\n", "testsection: a section must be a mapping"),
        ("othersection:\n  a: 1\n", "othersection: unknown key"),
    ],
)
def test_section_errors_name_the_key(section: str, tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, sections=SECTIONS)
    assert words in str(info.value) and "c.yaml" in str(info.value)


def test_sections_cannot_shadow_receiver_keys() -> None:
    with pytest.raises(ValueError, match="clashes"):
        load_config(env={}, sections={"es_url": _Section})
    with pytest.raises(TypeError, match="not a dataclass"):
        load_config(env={}, sections={"testsection": dict})


def test_secrets_are_never_shown() -> None:
    config = load_config(TESTDATA / "good.yaml", env={"OTEL_AUDIT_ES_PASSWORD": "from-env"})
    assert config.es_password == "from-env"
    shown = repr(config) + str(config_as_dict(config))
    assert "from-env" not in shown and "correct horse" not in shown
    assert config_as_dict(config)["es_password"] == "<redacted>"


def test_section_secrets_are_never_shown() -> None:
    from indexer.query.config import QueryConfig, es_connection_of

    config = load_config(
        env={"OTEL_AUDIT_QUERY__ES_USERNAME": "reader", "OTEL_AUDIT_QUERY__ES_PASSWORD": "rd-pw"},
        sections={"query": QueryConfig},
    )
    shown = repr(config) + str(config_as_dict(config))
    assert "rd-pw" not in shown and config_as_dict(config)["query"]["es_password"] == "<redacted>"
    # The query API reads with its own user, not the receiver's.
    assert es_connection_of(config).client_options()["basic_auth"] == ("reader", "rd-pw")
