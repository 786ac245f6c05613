"""Three small demo services that call each other over HTTP and emit audit events.

``storefront`` takes a checkout, calls ``billing`` to charge, which calls ``inventory`` to
reserve stock. Each service has its own OpenTelemetry resource (``service.name``), tracer and
logger providers exporting over OTLP, and propagates the W3C trace context on every call, so
one checkout is one trace across three services with audit events under its spans.

Used by ``make run`` (``otel-audit demo``), by ``otel-audit demo traffic`` (docker-compose)
and by the end-to-end tests.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry import propagate
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from otel_audit import _logs_compat
from otel_audit.emit import AuditLogger

__all__ = ["DemoCluster", "TrafficReport", "start_demo_services"]

SERVICES = ("storefront", "billing", "inventory")
_log = logging.getLogger("otel_audit.demo")


@dataclass
class TrafficReport:
    """What the demo sent, so a caller can check what arrived."""

    event_ids: list[str] = field(default_factory=list)
    invalid_event_ids: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    ordinary_logs: int = 0
    by_service: Counter[str] = field(default_factory=Counter)


class _Service:
    def __init__(
        self, name: str, endpoint: str, protocol: str, cluster: DemoCluster, insecure: bool
    ) -> None:
        self.name = name
        self.cluster = cluster
        resource = Resource.create(
            {
                "service.name": name,
                "service.version": "1.4.2",
                "service.namespace": "demo-shop",
                "deployment.environment.name": "demo",
            }
        )
        self.tracer_provider = TracerProvider(resource=resource)
        self.logger_provider = LoggerProvider(resource=resource)
        span_exporter, log_exporter = _exporters(endpoint, protocol, insecure)
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(span_exporter, schedule_delay_millis=200)
        )
        self.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(log_exporter, schedule_delay_millis=200)
        )
        self.tracer = self.tracer_provider.get_tracer("demo." + name)
        self.audit = AuditLogger(self.logger_provider)
        self.plain_logger = self.logger_provider.get_logger("demo." + name + ".app")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, name=f"demo-{name}", daemon=True
        )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                ctx = propagate.extract(self.headers)
                with service.tracer.start_as_current_span(
                    f"POST {self.path}", context=ctx, kind=SpanKind.SERVER
                ) as span:
                    span.set_attribute("http.request.method", "POST")
                    span.set_attribute("http.route", self.path)
                    status, result = service.cluster.handle(service, self.path, payload)
                    span.set_attribute("http.response.status_code", status)
                body = json.dumps(result).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def call(self, target: str, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        """POST to another demo service inside a CLIENT span, propagating the context."""
        other = self.cluster.services[target]
        with self.tracer.start_as_current_span(f"POST {target}{path}", kind=SpanKind.CLIENT):
            headers = {"Content-Type": "application/json"}
            propagate.inject(headers)
            request = urllib.request.Request(
                f"http://127.0.0.1:{other.port}{path}",
                data=json.dumps(payload).encode(),
                headers=headers,
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read() or b"{}")

    def emit(self, *, deliberately_invalid: bool = False, **kwargs: Any) -> str:
        event_id = self.audit.emit(**kwargs)
        report = self.cluster.report
        with self.cluster.lock:
            if deliberately_invalid:
                report.invalid_event_ids.append(event_id)
            else:
                report.event_ids.append(event_id)
            report.by_service[self.name] += 1
        return event_id

    def ordinary_log(self, message: str) -> None:
        if not self.cluster.ordinary_logs:
            return
        _logs_compat.emit_record(
            self.plain_logger,
            timestamp_ns=time.time_ns(),
            severity_number=9,
            severity_text="INFO",
            body=message,
            attributes={"code.function": "checkout"},
            event_name="",
        )
        with self.cluster.lock:
            self.cluster.report.ordinary_logs += 1


def _exporters(endpoint: str, protocol: str, insecure: bool) -> tuple[Any, Any]:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        target = endpoint.removeprefix("http://").removeprefix("https://")
        return (
            OTLPSpanExporter(endpoint=target, insecure=insecure),
            OTLPLogExporter(endpoint=target, insecure=insecure),
        )
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import (
            OTLPLogExporter as HttpLogExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        base = endpoint.rstrip("/")
        return (
            HttpSpanExporter(endpoint=base + "/v1/traces"),
            HttpLogExporter(endpoint=base + "/v1/logs"),
        )
    raise ValueError(f"protocol must be grpc or http, not {protocol!r}")


class DemoCluster:
    """The three running services and the checkout scenario."""

    def __init__(
        self,
        endpoint: str,
        protocol: str = "grpc",
        *,
        ordinary_logs: bool = False,
        insecure: bool = True,
    ) -> None:
        self.lock = threading.Lock()
        self.report = TrafficReport()
        self.ordinary_logs = ordinary_logs
        self.services = {
            name: _Service(name, endpoint, protocol, self, insecure) for name in SERVICES
        }

    def start(self) -> None:
        for service in self.services.values():
            service.thread.start()

    def shutdown(self) -> None:
        """Stop the HTTP servers and flush every provider (exports what is pending)."""
        for service in self.services.values():
            service.server.shutdown()
            service.server.server_close()
            service.tracer_provider.force_flush()
            service.logger_provider.force_flush()
            service.tracer_provider.shutdown()
            service.logger_provider.shutdown()

    # -- the scenario -------------------------------------------------------------------

    def checkout(self, n: int, *, with_violations: bool = False) -> str:
        """One customer checkout; returns its trace id (hex)."""
        front = self.services["storefront"]
        user = f"u-{1000 + n % 7}"
        with front.tracer.start_as_current_span("checkout", kind=SpanKind.INTERNAL) as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            self.handle(front, "/checkout", {"user": user, "n": n, "bad": with_violations})
        with self.lock:
            self.report.trace_ids.append(trace_id)
        return trace_id

    def handle(self, service: _Service, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        n = int(payload.get("n", 0))
        user = str(payload.get("user", "u-anon"))
        order = f"ord-{20260000 + n}"
        common: dict[str, Any] = {
            "client_address": f"203.0.113.{n % 250 + 1}",
            "session_id": f"s-{n:05x}",
        }
        if service.name == "storefront" and path == "/checkout":
            login_ok = n % 11 != 5
            service.emit(
                action="user.login",
                category="authentication",
                outcome="success" if login_ok else "failure",
                actor_id=user,
                actor_type="user",
                reason=None if login_ok else "wrong password",
                user_agent="demo-shop-web/3.1",
                **common,
            )
            service.ordinary_log(f"checkout started for {user}")
            if not login_ok:
                return 401, {"error": "login failed"}
            service.emit(
                action="order.create",
                category="data_change",
                outcome="success",
                actor_id=user,
                actor_type="user",
                resource_type="order",
                resource_id=order,
                **common,
            )
            status, result = service.call("billing", "/charge", {"user": user, "n": n})
            if payload.get("bad"):
                # Deliberate schema violations: the receiver rejects and dead-letters them.
                service.emit(
                    deliberately_invalid=True,
                    action="order.ship",
                    category="data_change",
                    outcome="ok",
                    actor_id=user,
                    actor_type="user",
                    resource_type="order",
                    resource_id=order,
                )
                service.emit(
                    deliberately_invalid=True,
                    action="Order Cancel",
                    category="data_change",
                    outcome="success",
                )
            return status, result
        if service.name == "billing" and path == "/charge":
            allowed = n % 9 != 4
            service.emit(
                action="invoice.create",
                category="data_change",
                outcome="success" if allowed else "denied",
                actor_id=user,
                actor_type="user",
                resource_type="invoice",
                resource_id=f"inv-{n:06d}",
                reason=None if allowed else "account on credit hold",
                correlation_id=order,
            )
            service.ordinary_log(f"charging {order}")
            if not allowed:
                return 403, {"error": "denied"}
            return service.call("inventory", "/reserve", {"user": user, "n": n})
        if service.name == "inventory" and path == "/reserve":
            in_stock = n % 13 != 7
            service.emit(
                action="stock.reserve",
                category="data_change",
                outcome="success" if in_stock else "failure",
                actor_id="billing",
                actor_type="service",
                resource_type="sku",
                resource_id=f"sku-{n % 40:03d}",
                error_type=None if in_stock else "OutOfStock",
                correlation_id=order,
            )
            if n % 10 == 3:
                service.emit(
                    action="role.grant",
                    category="permission_change",
                    outcome="success",
                    actor_id="admin-7",
                    actor_type="user",
                    resource_type="role",
                    resource_id="warehouse.manager",
                )
            return (200 if in_stock else 409), {"reserved": in_stock}
        return 404, {"error": "no such path"}


@contextmanager
def start_demo_services(
    endpoint: str, protocol: str = "grpc", *, ordinary_logs: bool = False
) -> Iterator[DemoCluster]:
    """Run the three services; flush and stop them on exit."""
    cluster = DemoCluster(endpoint, protocol, ordinary_logs=ordinary_logs)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.shutdown()
