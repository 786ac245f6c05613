"""The write edge's cost: OTLP/gRPC ingest with TLS, client certificates and a writer
token on, against plaintext without writers, in the same run.

Runs ``otel-audit serve`` twice per round (null sink: validate, hash, build and serialize
every stored document, then drop it; everything but Elasticsearch, so the edge's share is
shown against the smallest denominator), replays the same pre-encoded requests over
grpc.aio, and reports for each mode the receiver's CPU per event, events/s and latency.
The secured mode authenticates every call (``authorization: Bearer``, SHA-256 compared in
constant time), checks every record's ``service.name`` and tenant against the writer's
allowance and stores the writer in every document, over mTLS. Rounds alternate the modes;
the best round of each is compared, so a neighbour's burst on a shared host does not
decide the ratio.

    python -m bench.edge_bench [--requests 200] [--records 500] [--concurrency 4]
                               [--rounds 3] [--json]

Target: the secured mode within 10 % of plaintext (events/s and CPU per event).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.figures import print_figures
from bench.otlp_load import (
    LOGS_EXPORT_METHOD,
    Replay,
    build_requests,
    percentile,
    replay,
    run_receiver,
)

__all__ = ["TARGET_RATIO", "main", "run"]

TARGET_RATIO = 0.90
_TOKEN = "edge-bench-token-0123456789abcdef"


def _certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out = {"ca": directory / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for stem, cn, server in (("server", "receiver", True), ("client", "bench-writer", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        out[stem] = directory / f"{stem}.crt"
        out[stem + "_key"] = directory / f"{stem}.key"
        out[stem].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[stem + "_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return out


async def _replay_secure(
    target: str, bodies: list[bytes], concurrency: int, certs: dict[str, Path]
) -> Replay:
    import grpc
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

    out = Replay()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs["ca"].read_bytes(),
        private_key=certs["client_key"].read_bytes(),
        certificate_chain=certs["client"].read_bytes(),
    )
    metadata = (("authorization", f"Bearer {_TOKEN}"),)
    async with grpc.aio.secure_channel(
        target, credentials, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:
        export = channel.unary_unary(LOGS_EXPORT_METHOD)

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                raw = await export(body, timeout=120, metadata=metadata)
                out.latencies_s.append(time.perf_counter() - started)
                answer = ExportLogsServiceResponse()
                answer.ParseFromString(raw)
                out.rejected += answer.partial_success.rejected_log_records

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        out.wall_s = time.perf_counter() - started
    return out


def _secured_config(certs: dict[str, Path]) -> dict[str, Any]:
    import hashlib

    return {
        "consumer": "null_sink",
        "tls": {
            "cert_file": str(certs["server"]),
            "key_file": str(certs["server_key"]),
            "client_ca_file": str(certs["ca"]),
            "client_auth": "require",
        },
        "writers": {
            "required": True,
            "identities": [
                {
                    "name": "bench-writer",
                    "token_sha256": [hashlib.sha256(_TOKEN.encode()).hexdigest()],
                    "services": [f"svc-{i}" for i in range(5)],
                    "tenants": ["acme"],
                }
            ],
        },
    }


def _measure(receiver: Any, send: Any, events: int) -> dict[str, float]:
    cpu_before, _ = receiver.stat()
    load: Replay = send()
    cpu_after, peak = receiver.stat()
    return {
        "cpu_us_per_event": (cpu_after - cpu_before) / events * 1e6,
        "events_per_s": events / load.wall_s,
        "p50_ms": percentile(load.latencies_s, 0.5) * 1000,
        "p99_ms": percentile(load.latencies_s, 0.99) * 1000,
        "rejected": load.rejected,
        "peak_rss_mib": peak / 2**20,
    }


def run(n_requests: int, n_records: int, concurrency: int, rounds: int = 3) -> dict[str, Any]:
    """Both modes, ``rounds`` times each, alternating; the best round of each."""
    print(f"encoding {n_requests} x {n_records} events ...", file=sys.stderr)
    bodies = build_requests(n_requests, n_records)
    warmup = build_requests(5, n_records, seed=1)
    events = n_requests * n_records
    plain: list[dict[str, float]] = []
    secured: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="otel-audit-edge-") as tmp:
        certs = _certificates(Path(tmp))
        with (
            run_receiver({"consumer": "null_sink"}) as open_receiver,
            run_receiver(_secured_config(certs)) as tls_receiver,
        ):
            tls_target = f"localhost:{tls_receiver.grpc_port}"
            replay(open_receiver.target, warmup, concurrency)
            asyncio.run(_replay_secure(tls_target, warmup, concurrency, certs))
            for _ in range(max(1, rounds)):
                plain.append(
                    _measure(
                        open_receiver,
                        lambda: replay(open_receiver.target, bodies, concurrency),
                        events,
                    )
                )
                secured.append(
                    _measure(
                        tls_receiver,
                        lambda: asyncio.run(_replay_secure(tls_target, bodies, concurrency, certs)),
                        events,
                    )
                )
    best_plain = max(plain, key=lambda r: r["events_per_s"])
    best_secured = max(secured, key=lambda r: r["events_per_s"])
    cpu_plain = min(r["cpu_us_per_event"] for r in plain)
    cpu_secured = min(r["cpu_us_per_event"] for r in secured)
    throughput_ratio = best_secured["events_per_s"] / best_plain["events_per_s"]
    cpu_ratio = cpu_plain / cpu_secured
    return {
        "events": events,
        "requests": n_requests,
        "records_per_request": n_records,
        "concurrency": concurrency,
        "rounds": rounds,
        "plaintext_events_per_s": round(best_plain["events_per_s"]),
        "secured_events_per_s": round(best_secured["events_per_s"]),
        "plaintext_cpu_us_per_event": round(cpu_plain, 2),
        "secured_cpu_us_per_event": round(cpu_secured, 2),
        "plaintext_p99_ms": round(best_plain["p99_ms"], 1),
        "secured_p99_ms": round(best_secured["p99_ms"], 1),
        "secured_rejected": int(best_secured["rejected"]),
        "secured_to_plaintext_events_per_s": round(throughput_ratio, 3),
        "plaintext_to_secured_cpu": round(cpu_ratio, 3),
        "rounds_events_per_s": {
            "plaintext": [round(r["events_per_s"]) for r in plain],
            "secured": [round(r["events_per_s"]) for r in secured],
        },
        "target_ratio": TARGET_RATIO,
        "within_target": min(throughput_ratio, cpu_ratio) >= TARGET_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.requests, args.records, args.concurrency, args.rounds)
    print_figures(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
