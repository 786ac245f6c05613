"""Regenerate the seed corpus (``fuzz/corpus``) from real OTel SDK exporters' requests.

``python -m fuzz.seeds`` runs a small capturing HTTP server on a loopback port and points
the OpenTelemetry Python SDK's OTLP/HTTP exporters at it: logs emitted through the
``otel_audit`` helper (inside and outside spans, valid and invalid events, one record and a
batch) and spans (nested, with events, links and an error status). The request bodies the
exporters send are the protobuf seeds. The OTLP/JSON seeds come from the OpenTelemetry JS
SDK's own JSON serializer (what its OTLP/HTTP JSON exporters send), run by
``fuzz/json_seeds.js`` with the Node.js packages of ``sdk/node`` (``make sdk``). Each
file is named by the SHA-1 of its content. Timestamps and ids differ from run to run, so
regenerating replaces every seed of the folder.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
NODE_DIR = HERE.parent / "sdk" / "node"


class _Capture(BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.bodies.append((self.path, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _capturing_server() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.bodies  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def python_sdk_requests() -> list[tuple[str, bytes]]:
    """(path, body) of every request the Python SDK's OTLP/HTTP exporters sent."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Link, Status, StatusCode

    from otel_audit.emit import AuditLogger

    with _capturing_server() as (url, bodies):
        resource = Resource.create(
            {
                "service.name": "billing",
                "service.version": "1.4.2",
                "deployment.environment": "test",
            }
        )
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces"))
        )
        tracer = tracer_provider.get_tracer("billing.http", "1.4.2")

        single = LoggerProvider(resource=resource)
        single.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{url}/v1/logs"))
        )
        audit = AuditLogger(single)
        with tracer.start_as_current_span("PUT /invoices/{id}") as span:
            span.set_attribute("http.route", "/invoices/{id}")
            audit.emit(
                action="invoice.update",
                category="data_change",
                outcome="success",
                actor_id="u-1",
                actor_type="user",
                actor_name="Ada",
                resource_type="invoice",
                resource_id="inv-42",
                client_address="203.0.113.9",
                user_agent="curl/8.5",
                session_id="s-9",
                reason="amount corrected",
                tenant_id="acme",
                attributes={"invoice.amount": 12.5, "invoice.lines": [1, 2, 3], "retry": False},
            )
            with tracer.start_as_current_span(
                "db.update", links=[Link(span.get_span_context())]
            ) as child:
                child.add_event("row.locked", {"table": "invoices"})
                child.set_status(Status(StatusCode.ERROR, "deadlock"))
        audit.emit(
            action="user.login",
            category="authentication",
            outcome="failure",
            actor_id="svc-auth",
            actor_type="service",
            error_type="InvalidPassword",
        )
        audit.emit(action="Not A Verb", category="nonsense", outcome="maybe")  # invalid
        audit.emit(
            action="role.grant",
            category="permission_change",
            outcome="denied",
            actor_id="ünïcødé-👤",
            actor_type="user",
            resource_type="role",
            resource_id="admin",
            target_user_id="u-2",
            body="grant denied: " + "x" * 300,
            attributes={"nested": {"a": {"b": [b"\x00\xff", None, 2**62]}}},
        )
        single.shutdown()

        batch = LoggerProvider(resource=Resource.create({"service.name": "inventory"}))
        batch.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{url}/v1/logs"))
        )
        audit = AuditLogger(batch)
        for i in range(5):
            audit.emit(
                action="stock.adjust",
                category="data_change",
                outcome="success",
                actor_id=f"u-{i}",
                actor_type="user",
                resource_type="sku",
                resource_id=f"sku-{i}",
            )
        batch.shutdown()
        tracer_provider.shutdown()
        return list(bodies)


def node_json_requests() -> list[tuple[str, bytes]]:
    """(path, body) of OTLP/JSON requests serialized by the OpenTelemetry JS SDK."""
    if not (NODE_DIR / "node_modules").is_dir():
        raise SystemExit("fuzz.seeds: sdk/node/node_modules is missing: run `make sdk` first")
    proc = subprocess.run(
        ["node", str(HERE / "json_seeds.js")],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    return [(item["path"], item["body"].encode()) for item in json.loads(proc.stdout)]


def write(target: str, body: bytes) -> Path:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / hashlib.sha1(body).hexdigest()
    path.write_bytes(body)
    return path


def main() -> int:
    written: dict[str, int] = {}
    requests = [(p, b, "pb") for p, b in python_sdk_requests()]
    requests += [(p, b, "json") for p, b in node_json_requests()]
    for target in ("logs_pb", "traces_pb", "logs_json", "traces_json"):
        for old in (CORPUS / target).glob("*"):
            old.unlink()
    for path, body, encoding in requests:
        signal = "logs" if path.endswith("/v1/logs") else "traces"
        target = f"{signal}_{encoding}"
        write(target, body)
        written[target] = written.get(target, 0) + 1
    for target, count in sorted(written.items()):
        print(f"fuzz.seeds: {target}: {count} requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
