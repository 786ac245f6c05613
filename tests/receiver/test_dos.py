"""No cheap denial of service: stalled gzip uploads, a burst of large gRPC calls and a flood
of junk leave the receiver answering a normal exporter within 1 s, its peak RSS under the
in-flight budget plus 200 MB, and dead letters bounded. The receiver runs as its own
process (``otel-audit serve``, the null_sink consumer: decode, validate, build, discard)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
import requests
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

from indexer.deadletter import MAX_ORIGINAL_BYTES, rejected_item
from indexer.local_es.node import free_port
from otel_audit.validate import Violation
from tests.support.front_harness import audit_attributes, logs_request

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
BUDGET = 256 * MIB
BODY_TIMEOUT_S = 3


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    http: str
    grpc: str

    def peak_rss_bytes(self, field: str = "VmHWM") -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith(field + ":"))
        return int(line.split()[1]) * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("dos")
    http_port = free_port()
    grpc_port = free_port(taken={http_port})
    query_port = free_port(taken={http_port, grpc_port})
    config = tmp / "receiver.yaml"
    config.write_text(
        f"grpc_endpoint: 127.0.0.1:{grpc_port}\n"
        f"http_endpoint: 127.0.0.1:{http_port}\n"
        f"query_api_endpoint: 127.0.0.1:{query_port}\n"
        "consumer: null_sink\n"
        "spans_consumer: none\n"
        f"spool_dir: {tmp / 'spool'}\n"
        "max_request_bytes: 8388608\n"
        f"max_inflight_bytes: {BUDGET}\n"
        "shutdown_timeout_s: 5\n"
        "log_level: warning\n"
        "limits:\n"
        f"  http_body_timeout_s: {BODY_TIMEOUT_S}\n"
        "  max_concurrent_grpc_calls: 4\n"
        f"  grpc_message_timeout_s: {BODY_TIMEOUT_S}\n"
        "lifecycle:\n"
        "  enabled: false\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_audit.cli", "serve", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    served = Served(proc, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"receiver exited with {proc.returncode}"
            try:
                if requests.get(served.http + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "receiver did not become ready"
            time.sleep(0.2)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def retry_delay_s(error: grpc.RpcError) -> float | None:
    """The RetryInfo delay of ``grpc-status-details-bin``, as the Collector reads it."""
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)
            for detail in status.details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def _normal_export_s(served: Served) -> float:
    body = logs_request(5).SerializeToString()
    started = time.monotonic()
    answer = requests.post(
        served.http + "/v1/logs",
        data=body,
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.content
    return elapsed


def test_stalled_gzip_uploads_do_not_hold_up_a_normal_exporter(served: Served) -> None:
    bomb = gzip.compress(bytes(60 * MIB), compresslevel=9)  # about 60 KiB on the wire
    host, port = served.http.removeprefix("http://").split(":")
    sockets = []
    try:
        for _ in range(50):
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(
                b"POST /v1/logs HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/x-protobuf\r\nContent-Encoding: gzip\r\n"
                + f"Content-Length: {len(bomb) + 4096}\r\n\r\n".encode()
                + bomb  # and then stall, 4 KiB short of the declared length
            )
            sockets.append(s)
        time.sleep(0.5)
        assert _normal_export_s(served) < 1.0
        # The stalled uploads are answered 408 once the body-read timeout passes.
        sockets[0].settimeout(BODY_TIMEOUT_S + 5)
        assert sockets[0].recv(64).startswith(b"HTTP/1.1 408")
        assert _normal_export_s(served) < 1.0
    finally:
        for s in sockets:
            s.close()


def test_stalled_grpc_calls_free_their_slots(served: Served) -> None:
    """40 gRPC calls that send their headers and never their message: a normal exporter is
    answered within 1 s (accepted, or refused with a retry delay while they hold every
    slot), and they are cancelled after the message timeout."""
    import asyncio

    method = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"

    async def stalled(channel: grpc.aio.Channel, stop: asyncio.Event) -> str:
        async def nothing() -> Any:
            await stop.wait()
            return
            yield b""

        try:
            await channel.stream_unary(method)(nothing(), timeout=60)
            return "OK"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name

    async def scenario() -> list[str]:
        stop = asyncio.Event()
        async with grpc.aio.insecure_channel(served.grpc) as channel:
            calls = [asyncio.ensure_future(stalled(channel, stop)) for _ in range(40)]
            await asyncio.sleep(0.5)
            try:
                own = [("grpc.use_local_subchannel_pool", 1)]
                with grpc.insecure_channel(served.grpc, options=own) as normal:
                    stub = logs_service_pb2_grpc.LogsServiceStub(normal)  # type: ignore[no-untyped-call]
                    started = time.monotonic()
                    try:
                        stub.Export(logs_request(5), timeout=10)
                    except grpc.RpcError as exc:
                        assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                        assert retry_delay_s(exc) is not None
                    assert time.monotonic() - started < 1.0
                return await asyncio.wait_for(asyncio.gather(*calls), BODY_TIMEOUT_S + 10)
            finally:
                stop.set()

    codes = asyncio.run(scenario())
    assert codes.count("DEADLINE_EXCEEDED") == 4, codes  # the slots, freed by the timeout
    assert set(codes) == {"DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}, codes
    own = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(served.grpc, options=own) as normal:
        stub = logs_service_pb2_grpc.LogsServiceStub(normal)  # type: ignore[no-untyped-call]
        started = time.monotonic()
        stub.Export(logs_request(5), timeout=10)
        assert time.monotonic() - started < 1.0


_BURST = """
import asyncio, json, sys
import grpc
from tests.support.front_harness import audit_attributes, logs_request

body = logs_request([audit_attributes(i) for i in range(8000)]).SerializeToString()
METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


async def main() -> None:
    async with grpc.aio.insecure_channel(sys.argv[1]) as channel:
        export = channel.unary_unary(METHOD)

        async def call() -> str:
            try:
                await export(body, timeout=60)
                return "OK"
            except grpc.aio.AioRpcError as exc:
                # A refusal counts as retryable only with RetryInfo, as the Collector has it.
                details = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
                return exc.code().name + ("+RetryInfo" if details else f": {exc.details()}")

        print(json.dumps({"body_bytes": len(body)}), flush=True)
        codes = await asyncio.gather(*(call() for _ in range(100)))
        print(json.dumps({"codes": codes}), flush=True)


asyncio.run(main())
"""


def test_burst_of_large_grpc_calls_keeps_rss_bounded(served: Served) -> None:
    """Another process sends 100 concurrent calls of 8,000 events (2.9 MB) each."""
    rss_before = served.peak_rss_bytes("VmRSS")
    burst = subprocess.Popen(
        [sys.executable, "-c", _BURST, served.grpc],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert burst.stdout is not None
        first = json.loads(burst.stdout.readline())
        assert 2 * MIB < first["body_bytes"] < 4 * MIB
        time.sleep(0.5)  # the burst is on its way
        own = [("grpc.use_local_subchannel_pool", 1)]  # another client, its own connection
        with grpc.insecure_channel(served.grpc, options=own) as normal:
            stub = logs_service_pb2_grpc.LogsServiceStub(normal)  # type: ignore[no-untyped-call]
            started = time.monotonic()
            try:
                stub.Export(logs_request(5), timeout=10)
            except grpc.RpcError as exc:  # pushed back at once, to retry, is an answer too
                assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert retry_delay_s(exc) is not None, "the Collector drops it without RetryInfo"
            normal_s = time.monotonic() - started
        codes = json.loads(burst.stdout.readline())["codes"]
        assert burst.wait(60) == 0
    finally:
        if burst.poll() is None:
            burst.kill()
            burst.wait()
    peak = served.peak_rss_bytes()
    print(
        f"normal exporter answered in {normal_s:.3f} s; OK {codes.count('OK')} of 100; "
        f"peak RSS {peak / MIB:.0f} MiB (RSS before {rss_before / MIB:.0f} MiB)"
    )
    assert normal_s < 1.0
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED+RetryInfo"}, sorted(set(codes))
    assert "OK" in codes
    assert peak < BUDGET + 200 * MIB, f"peak RSS {peak / MIB:.0f} MiB"
    assert _normal_export_s(served) < 1.0


_SPIN = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"


def test_burst_on_a_busy_machine_is_refused_only_in_ways_a_collector_retries(
    served: Served,
) -> None:
    """The same kind of burst while other processes take every core: calls pile up faster
    than they are answered. Each must still be accepted or refused with RetryInfo; a
    refusal without it (gRPC's own concurrent-call cap answers so) is a batch the
    Collector drops for good."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(2 * (os.cpu_count() or 1))
    ]
    bursts: list[subprocess.Popen[str]] = []
    try:
        bursts = [
            subprocess.Popen(
                [sys.executable, "-c", _BURST, served.grpc],
                cwd=REPO,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        outputs = [burst.communicate(timeout=120)[0] for burst in bursts]
    finally:
        for process in spinners + bursts:
            process.kill()
            process.wait()
    assert [burst.returncode for burst in bursts] == [0, 0, 0]
    codes = [c for out in outputs for c in json.loads(out.splitlines()[-1])["codes"]]
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED+RetryInfo"}, sorted(set(codes))
    assert "OK" in codes


def test_flood_of_invalid_records_is_answered_and_bounded(served: Served) -> None:
    junk = logs_request(
        [
            audit_attributes(i, audit__action="NOT A VALID ACTION", junk="x" * 20_000)
            for i in range(200)
        ]
    ).SerializeToString()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(
                lambda _: requests.post(
                    served.http + "/v1/logs",
                    data=junk,
                    headers={"Content-Type": "application/x-protobuf"},
                    timeout=30,
                ),
                range(16),
            )
        )
    for answer in answers:
        assert answer.status_code in (200, 429)
    assert _normal_export_s(served) < 1.0


def test_dead_letter_keeps_a_bounded_original_with_its_hash() -> None:
    request = logs_request([audit_attributes(0, junk="y" * 1_000_000)])
    from otel_audit.record import LogRecordData
    from receiver.otlp.decode import decode_logs_protobuf

    (record,) = decode_logs_protobuf(request.SerializeToString()).records
    assert isinstance(record, LogRecordData)
    item = rejected_item(
        "validation",
        [Violation("record", "rule", "bad")],
        received_ns=time.time_ns(),
        record=record,
    )
    stored = orjson.dumps(item.document)
    assert len(stored) < MAX_ORIGINAL_BYTES + 4096
    original = item.document["original"]
    assert original["truncated"] is True and original["bytes"] > 1_000_000
    from indexer.deadletter import json_safe

    full = orjson.dumps(json_safe(record.as_wire_dict()))
    assert original["sha256"] == hashlib.sha256(full).hexdigest()
    small = rejected_item(
        "validation",
        [Violation("record", "rule", "bad")],
        received_ns=time.time_ns(),
        record=decode_logs_protobuf(logs_request(1).SerializeToString()).records[0],
    )
    assert "truncated" not in json.dumps(small.document["original"])


@pytest.mark.integration
def test_junk_in_elasticsearch_is_bounded(
    clean_es: Any, make_consumer: Any, make_record: Any
) -> None:
    """Invalid records of 200 KiB each are dead-lettered in Elasticsearch at about 16 KiB
    each, with the SHA-256 of what was sent."""
    import asyncio

    from indexer.indices import REJECTED_ALIAS

    marker = f"junk-{time.time_ns()}"
    records = []
    for i in range(20):
        record = make_record(i)
        record.attributes["audit.action"] = "NOT A VALID ACTION"
        record.attributes["junk"] = marker + "z" * 200_000
        records.append(record)
    consumer = make_consumer()

    async def go() -> Any:
        await consumer.start()
        try:
            return await consumer.consume_logs(records)
        finally:
            await consumer.shutdown(10)

    result = asyncio.run(go())
    assert result.rejected == 20
    clean_es.indices.refresh(index=REJECTED_ALIAS)
    hits = clean_es.search(index=REJECTED_ALIAS, size=100)["hits"]["hits"]
    mine = [h for h in hits if marker in json.dumps(h["_source"])]
    assert len(mine) == 20
    for hit in mine:
        assert len(orjson.dumps(hit["_source"])) < MAX_ORIGINAL_BYTES + 4096
        original = hit["_source"]["original"]
        assert original["truncated"] is True and original["bytes"] > 200_000
        assert len(original["sha256"]) == 64


def test_large_calls_cannot_take_every_call_slot() -> None:
    from receiver.limits import LimitsConfig

    LimitsConfig(max_concurrent_grpc_calls=4, max_concurrent_large_grpc_calls=3).validate()
    with pytest.raises(ValueError, match=r"max_concurrent_large_grpc_calls: .*below"):
        LimitsConfig(max_concurrent_grpc_calls=4, max_concurrent_large_grpc_calls=4).validate()
