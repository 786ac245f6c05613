"""The drills' own tools: the fault proxy really injects its faults, the DNS server really
answers with every receiver's address (a drill whose fault never happens proves nothing)."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from tests.drill.dns import LoopbackDns
from tests.drill.proxy import Fault, FaultProxy

RESPONSE = b"x" * 4000


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while self.request.recv(65536):
            self.request.sendall(RESPONSE)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = FaultProxy([("127.0.0.1", server.server_address[1])])
    try:
        yield proxy
    finally:
        proxy.close()
        server.shutdown()
        server.server_close()


def _ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"ping")
        got = b""
        while len(got) < len(RESPONSE):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        return got


def test_proxy_passes_through_then_cuts_refuses_and_delays(proxy: FaultProxy) -> None:
    assert _ask(proxy.port) == RESPONSE

    proxy.set_fault(Fault(truncate_p=1.0))
    cut = _ask(proxy.port)
    assert 0 < len(cut) < len(RESPONSE)
    assert proxy.stats.truncated == 1

    proxy.set_fault(Fault(refuse=True))
    assert _ask(proxy.port) == b""
    assert proxy.stats.refused == 1

    proxy.set_fault(Fault(latency_s=0.3))
    started = time.monotonic()
    assert _ask(proxy.port) == RESPONSE
    assert time.monotonic() - started >= 0.3


def _query(name: str, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return (
        struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!HH", qtype, 1)
    )


def test_dns_answers_every_address_for_its_name_only() -> None:
    dns = LoopbackDns("receivers.test", ["127.0.0.1", "127.0.0.2"])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(_query("receivers.test"), ("127.0.0.1", dns.port))
            answer = sock.recv(512)
            assert struct.unpack("!H", answer[6:8])[0] == 2
            assert socket.inet_aton("127.0.0.1") in answer
            assert socket.inet_aton("127.0.0.2") in answer
            sock.sendto(_query("other.test"), ("127.0.0.1", dns.port))
            assert struct.unpack("!H", sock.recv(512)[2:4])[0] & 0xF == 3  # NXDOMAIN
        assert dns.target(4317) == f"dns://127.0.0.1:{dns.port}/receivers.test:4317"
    finally:
        dns.close()
