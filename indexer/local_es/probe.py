"""Asking a port what is behind it: nothing, a healthy Elasticsearch, or something else.

Plain ``http.client`` on purpose: the manager must give a clear answer about a port
that holds an arbitrary program, where a full client would retry and raise its own
errors. ``GET /`` is not served by the integ-test distribution, so health is read
from ``/_cluster/health`` and the version from ``/_nodes``.
"""

from __future__ import annotations

import enum
import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any

__all__ = ["PortState", "Probe", "port_accepts", "probe"]


class PortState(enum.Enum):
    """What answers on a port."""

    FREE = "free"
    """Nothing listens (connection refused)."""
    HEALTHY = "healthy"
    """Elasticsearch with yellow or green cluster health."""
    UNHEALTHY = "unhealthy"
    """Elasticsearch that answers but is red or not ready yet."""
    FOREIGN = "foreign"
    """Something that is not Elasticsearch (or does not answer HTTP in time)."""


@dataclass(frozen=True)
class Probe:
    """Result of :func:`probe`."""

    state: PortState
    health: str | None = None
    version: str | None = None
    detail: str = ""


def port_accepts(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _get(host: str, port: int, path: str, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def _version(host: str, port: int, timeout_s: float) -> str | None:
    try:
        status, _, body = _get(host, port, "/_nodes/_local?filter_path=nodes.*.version", timeout_s)
        if status != 200:
            return None
        nodes: dict[str, Any] = json.loads(body).get("nodes", {})
        for node in nodes.values():
            return str(node.get("version"))
    except (OSError, http.client.HTTPException, ValueError):
        return None
    return None


def probe(host: str, port: int, timeout_s: float = 3.0) -> Probe:
    """Classify what listens on host:port."""
    try:
        status, headers, body = _get(
            host, port, "/_cluster/health?wait_for_status=yellow&timeout=1s", timeout_s
        )
    except ConnectionRefusedError:
        return Probe(PortState.FREE)
    except TimeoutError:
        return Probe(PortState.FOREIGN, detail=f"no HTTP answer within {timeout_s:.0f} s")
    except (OSError, http.client.HTTPException) as exc:
        if not port_accepts(host, port):
            return Probe(PortState.FREE)
        return Probe(PortState.FOREIGN, detail=f"not an HTTP server: {exc.__class__.__name__}")
    if headers.get("x-elastic-product") != "Elasticsearch":
        return Probe(PortState.FOREIGN, detail=f"HTTP {status} without the Elasticsearch header")
    try:
        health = str(json.loads(body).get("status"))
    except ValueError:
        health = "unknown"
    if status == 200 and health in ("green", "yellow"):
        return Probe(PortState.HEALTHY, health=health, version=_version(host, port, timeout_s))
    return Probe(PortState.UNHEALTHY, health=health, detail=f"cluster health {health}")
