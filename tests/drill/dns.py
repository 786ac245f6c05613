"""A loopback DNS server that answers one name with several IPv4 addresses.

The Collector's OTLP exporter balances over every address a ``dns://`` target resolves to
(gRPC's round-robin balancer); a name that resolves to 127.0.0.1, 127.0.0.2 ... lets
several receivers on the same port behind one exporter run on one machine, without
editing ``/etc/hosts``. Endpoint: ``dns://127.0.0.1:<port>/<name>:<grpc port>``.
"""

from __future__ import annotations

import socket
import struct
import threading

__all__ = ["LoopbackDns"]

_TYPE_A = 1
_CLASS_IN = 1


def _question_end(packet: bytes, offset: int) -> int:
    while packet[offset]:
        offset += packet[offset] + 1
    return offset + 1


def _qname(packet: bytes, offset: int) -> str:
    labels = []
    while packet[offset]:
        length = packet[offset]
        labels.append(packet[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += length + 1
    return ".".join(labels).lower()


def answer(packet: bytes, name: str, addresses: list[str]) -> bytes:
    """The response to one query: A records for ``name``; no records for other types,
    NXDOMAIN for other names."""
    query_id, _flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount != 1:
        return struct.pack("!HHHHHH", query_id, 0x8181, 0, 0, 0, 0)  # FORMERR-ish: refuse
    end = _question_end(packet, 12)
    qtype, _qclass = struct.unpack("!HH", packet[end : end + 4])
    question = packet[12 : end + 4]
    asked = _qname(packet, 12)
    if asked != name.lower():
        return struct.pack("!HHHHHH", query_id, 0x8583, 1, 0, 0, 0) + question
    records = b""
    count = 0
    if qtype == _TYPE_A:
        for address in addresses:
            # 0xC00C: a pointer to the name in the question.
            records += struct.pack("!HHHIH", 0xC00C, _TYPE_A, _CLASS_IN, 5, 4)
            records += socket.inet_aton(address)
            count += 1
    return struct.pack("!HHHHHH", query_id, 0x8580, 1, count, 0, 0) + question + records


class LoopbackDns:
    """A UDP DNS server on 127.0.0.1 in a daemon thread; ``addresses`` may be changed."""

    def __init__(self, name: str, addresses: list[str]) -> None:
        self.name = name
        self.addresses = list(addresses)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="loopback-dns", daemon=True)
        self._thread.start()

    def target(self, port: int) -> str:
        """The gRPC target that resolves ``name`` through this server."""
        return f"dns://127.0.0.1:{self.port}/{self.name}:{port}"

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                packet, peer = self._sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                self._sock.sendto(answer(packet, self.name, self.addresses), peer)
            except (struct.error, IndexError, OSError):
                continue

    def close(self) -> None:
        """Stop answering and release the port."""
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
