"""The Collector build and configs, checked with the real ``otelcol-audit`` binary.

Every file in collector-config/testdata/ is loaded here: the good ones must pass
``validate``, the deliberately bad ones must be rejected with an error naming the problem.
The smoke tests run the Collector next to a small in-test OTLP gRPC server standing in for
the otel-audit receiver, and send records with the real OpenTelemetry Python SDK.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from tests.support.collector_build import (
    CONFIG_DIR,
    MAIN_CONFIG,
    CollectorPorts,
    ValidationResult,
    free_port,
    validate_config,
)

TESTDATA = CONFIG_DIR / "testdata"
FILE_BACKEND = TESTDATA / "backend-file.yaml"
TLS_CONFIG = TESTDATA / "otelcol-audit-tls.yaml"

# What the main config needs to resolve; the ports are never opened by `validate`.
MAIN_ENV = {
    "OTEL_AUDIT_RECEIVER_ENDPOINT": "127.0.0.1:14317",
    "OTEL_AUDIT_BACKEND_ENDPOINT": "http://127.0.0.1:14318",
    "OTEL_AUDIT_COLLECTOR_STORAGE_DIR": "/tmp/otel-audit-validate-only",
}
TLS_ENV = {
    **MAIN_ENV,
    **{
        name: f"/etc/otel-audit/{name.lower()}"
        for name in (
            "OTEL_AUDIT_COLLECTOR_TLS_CERT",
            "OTEL_AUDIT_COLLECTOR_TLS_KEY",
            "OTEL_AUDIT_COLLECTOR_TOKENS_FILE",
            "OTEL_AUDIT_RECEIVER_CA",
            "OTEL_AUDIT_RECEIVER_CLIENT_CERT",
            "OTEL_AUDIT_RECEIVER_CLIENT_KEY",
            "OTEL_AUDIT_RECEIVER_TOKEN_FILE",
        )
    },
}

# Deliberately bad overlays of the main config, and what the error must name.
INVALID_OVERLAYS = {
    "invalid-filter-condition.yaml": ["filter/audit_only", "invalid syntax"],
    "invalid-unknown-exporter.yaml": ["logs/audit", 'exporter "otlp_grpc/receiver"'],
    "invalid-queue-smaller-than-batch.yaml": ["otlp_grpc/audit", "min_size", "queue_size"],
}
GOOD_CONFIGS = {"backend-file.yaml", "otelcol-audit-tls.yaml"}


def _assert_valid(result: ValidationResult) -> None:
    assert result.ok, f"validate rejected a good config:\n{result.message}"


# --- configs, without the binary ---------------------------------------------------------


def test_every_testdata_file_is_checked() -> None:
    on_disk = {path.name for path in TESTDATA.glob("*.yaml")}
    assert on_disk == GOOD_CONFIGS | set(INVALID_OVERLAYS)


def test_manifest_pins_one_collector_release_and_lists_only_used_components() -> None:
    manifest = yaml.safe_load((CONFIG_DIR / "builder-config.yaml").read_text())
    modules = [
        entry["gomod"].split()
        for kind in ("receivers", "processors", "exporters", "extensions", "providers")
        for entry in manifest.get(kind, [])
    ]
    unstable = {version for path, version in modules if version.startswith("v0.")}
    stable = {version for path, version in modules if version.startswith("v1.")}
    assert unstable == {"v0.161.0"}, modules
    # Core's stable modules are released together with v0.N.0 as v1.(N-94).0.
    assert stable <= {"v1.67.0"}, modules
    assert "connectors" not in manifest

    configs = [MAIN_CONFIG, *(TESTDATA / name for name in GOOD_CONFIGS)]
    used = set()
    for path in configs:
        config = yaml.safe_load(path.read_text())
        for kind in ("receivers", "processors", "exporters", "extensions"):
            used |= {name.split("/")[0] for name in config.get(kind) or {}}
    component_dirs = {
        "otlpreceiver": "otlp",
        "memorylimiterprocessor": "memory_limiter",
        "batchprocessor": "batch",
        "filterprocessor": "filter",
        "otlpexporter": "otlp_grpc",
        "otlphttpexporter": "otlp_http",
        "fileexporter": "file",
        "filestorage": "file_storage",
        "healthcheckextension": "health_check",
        "bearertokenauthextension": "bearertokenauth",
    }
    in_manifest = {
        component_dirs[path.rsplit("/", 1)[1]]
        for path, _ in modules
        if "/confmap/provider/" not in path
    }
    assert in_manifest == used


# --- validate with the real binary -------------------------------------------------------


@pytest.mark.collector
def test_main_config_validates(collector_binary: Path) -> None:
    _assert_valid(validate_config(collector_binary, [MAIN_CONFIG], MAIN_ENV))


@pytest.mark.collector
def test_main_config_with_file_backend_validates(collector_binary: Path) -> None:
    env = {
        "OTEL_AUDIT_RECEIVER_ENDPOINT": "127.0.0.1:14317",
        "OTEL_AUDIT_BACKEND_FILE": "/tmp/otel-audit-validate-only/backend.jsonl",
    }
    _assert_valid(validate_config(collector_binary, [MAIN_CONFIG, FILE_BACKEND], env))


@pytest.mark.collector
def test_tls_and_auth_variant_validates(collector_binary: Path) -> None:
    _assert_valid(validate_config(collector_binary, [TLS_CONFIG], TLS_ENV))


@pytest.mark.collector
def test_tls_variant_names_missing_certificates(collector_binary: Path) -> None:
    env = {**TLS_ENV, "OTEL_AUDIT_COLLECTOR_TLS_KEY": ""}
    result = validate_config(collector_binary, [TLS_CONFIG], env)
    assert not result.ok
    assert "receivers::otlp::protocols::grpc" in result.message
    assert "both certificate and key" in result.message


@pytest.mark.collector
def test_main_config_requires_the_receiver_endpoint(collector_binary: Path) -> None:
    env = {**MAIN_ENV, "OTEL_AUDIT_RECEIVER_ENDPOINT": ""}
    result = validate_config(collector_binary, [MAIN_CONFIG], env)
    assert not result.ok
    assert 'exporters::otlp_grpc/audit: requires a non-empty "endpoint"' in result.message


@pytest.mark.collector
@pytest.mark.parametrize("overlay", sorted(INVALID_OVERLAYS))
def test_bad_config_is_rejected_naming_the_problem(collector_binary: Path, overlay: str) -> None:
    result = validate_config(collector_binary, [MAIN_CONFIG, TESTDATA / overlay], MAIN_ENV)
    assert not result.ok, f"{overlay} passed validate"
    for expected in INVALID_OVERLAYS[overlay]:
        assert expected in result.message, result.message


# --- smoke: routing through the running Collector ----------------------------------------


class RecordingLogsService(logs_service_pb2_grpc.LogsServiceServicer):
    """Stands in for the otel-audit receiver: keeps every log record it is sent."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._changed = threading.Condition()

    def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: grpc.ServicerContext
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        found = [
            {
                "body": record.body.string_value,
                "attributes": {kv.key: kv.value.string_value for kv in record.attributes},
            }
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]
        with self._changed:
            self.records.extend(found)
            self._changed.notify_all()
        return logs_service_pb2.ExportLogsServiceResponse()

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate()`` holds for the records received so far."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout=timeout_s)

    def bodies(self) -> list[str]:
        with self._changed:
            return [record["body"] for record in self.records]


@pytest.fixture
def receiver_port() -> int:
    return free_port()


@pytest.fixture
def fake_receiver(receiver_port: int) -> Iterator[RecordingLogsService]:
    """An OTLP gRPC logs server on ``receiver_port`` (the test's "otel-audit receiver")."""
    service, server = _serve(receiver_port)
    yield service
    server.stop(grace=None)


def _serve(port: int) -> tuple[RecordingLogsService, grpc.Server]:
    service = RecordingLogsService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(service, server)
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    server.start()
    return service, server


def _emit(endpoint: str, records: list[tuple[str, dict[str, str]]]) -> None:
    """Send ``(body, attributes)`` log records through the OTel SDK's OTLP gRPC exporter."""
    provider = LoggerProvider(resource=Resource.create({"service.name": "collector-smoke"}))
    exporter = OTLPLogExporter(endpoint=endpoint, insecure=True, timeout=10)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = provider.get_logger("tests.collector")
    for body, attributes in records:
        logger.emit(
            LogRecord(
                timestamp=time.time_ns(),
                severity_number=SeverityNumber.INFO,
                body=body,
                attributes=attributes,
            )
        )
    assert provider.force_flush(timeout_millis=15_000)
    provider.shutdown()


def _file_bodies(path: Path) -> list[str]:
    """Bodies of the log records in a fileexporter JSON-lines file (OTLP/JSON)."""
    if not path.exists():
        return []
    bodies = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        for resource_logs in json.loads(line).get("resourceLogs", []):
            for scope_logs in resource_logs.get("scopeLogs", []):
                for record in scope_logs.get("logRecords", []):
                    bodies.append(record.get("body", {}).get("stringValue", ""))
    return bodies


def _wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


AUDIT_ATTRIBUTES = {
    "audit.action": "invoice.update",
    "audit.category": "data_change",
    "audit.outcome": "success",
    "audit.actor.id": "u-1",
    "audit.actor.type": "user",
}


@pytest.mark.collector
def test_audit_records_reach_the_receiver_and_others_the_usual_backend(
    start_collector: Callable[..., Any],
    fake_receiver: RecordingLogsService,
    receiver_port: int,
    tmp_path: Path,
) -> None:
    backend_file = tmp_path / "backend.jsonl"
    collector = start_collector(
        f"127.0.0.1:{receiver_port}",
        configs=(MAIN_CONFIG, FILE_BACKEND),
        env={"OTEL_AUDIT_BACKEND_FILE": str(backend_file)},
    )

    _emit(
        collector.otlp_grpc_endpoint,
        [("audit: invoice updated", AUDIT_ATTRIBUTES), ("ordinary: cache warmed", {"k": "v"})],
    )

    assert fake_receiver.wait_for(lambda: bool(fake_receiver.records), 15), collector.log_tail()
    assert _wait_until(lambda: bool(_file_bodies(backend_file)), 15), collector.log_tail()
    # Both paths have delivered; give a stray record time to show up before the negatives.
    time.sleep(1.0)
    assert fake_receiver.bodies() == ["audit: invoice updated"]
    assert fake_receiver.records[0]["attributes"] == AUDIT_ATTRIBUTES
    assert _file_bodies(backend_file) == ["ordinary: cache warmed"]


@pytest.mark.collector
def test_audit_records_wait_on_disk_through_a_receiver_outage_and_a_restart(
    start_collector: Callable[..., Any], receiver_port: int, tmp_path: Path
) -> None:
    work_dir = tmp_path / "collector"
    ports = CollectorPorts.pick_free()
    env = {"OTEL_AUDIT_BACKEND_FILE": str(tmp_path / "backend.jsonl")}
    configs = (MAIN_CONFIG, FILE_BACKEND)
    endpoint = f"127.0.0.1:{receiver_port}"

    # The receiver is down: the Collector accepts the record and keeps retrying it.
    first = start_collector(endpoint, configs=configs, env=env, work_dir=work_dir, ports=ports)
    _emit(first.otlp_grpc_endpoint, [("audit: survived", AUDIT_ATTRIBUTES)])
    assert _wait_until(
        lambda: re.search(r"Exporting failed\. Will retry", first.log_tail(200)) is not None, 15
    ), first.log_tail()
    first.shutdown()

    # A new Collector on the same queue directory delivers it once the receiver is back.
    second = start_collector(endpoint, configs=configs, env=env, work_dir=work_dir, ports=ports)
    service, server = _serve(receiver_port)
    try:
        assert service.wait_for(lambda: bool(service.records), 30), second.log_tail()
        assert service.bodies() == ["audit: survived"]
    finally:
        server.stop(grace=None)
