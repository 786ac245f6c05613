"""Asking a port what is behind it: nothing, a healthy Elasticsearch, or something else.

Plain ``http.client`` on purpose: the manager must give a clear answer about a port
that holds an arbitrary program, where a full client would retry and raise its own
errors. ``GET /`` is not served by the integ-test distribution, so health is read
from ``/_cluster/health`` and the version from ``/_nodes``. A secured node is asked over
HTTPS (``tls``) with an ``Authorization`` header (``auth``).
"""

from __future__ import annotations

import enum
import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any

__all__ = ["PLAIN", "Access", "PortState", "Probe", "get_json", "port_accepts", "probe"]


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
    nodes: int = 0
    """Nodes in the cluster, as the health answer counts them."""


def port_accepts(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Access:
    """How to speak to a node: TLS context and Authorization header (both None: plain)."""

    tls: ssl.SSLContext | None = None
    auth: str | None = None


PLAIN = Access()


def _get(
    host: str, port: int, path: str, timeout_s: float, access: Access = PLAIN
) -> tuple[int, dict[str, str], bytes]:
    conn: http.client.HTTPConnection
    if access.tls is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=access.tls)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    headers = {"Accept": "application/json"}
    if access.auth:
        headers["Authorization"] = access.auth
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def get_json(
    host: str, port: int, path: str, access: Access = PLAIN, timeout_s: float = 3.0
) -> tuple[int, Any]:
    """``GET path``: the status and the parsed JSON body (None when not JSON)."""
    status, _, body = _get(host, port, path, timeout_s, access)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def _version(host: str, port: int, timeout_s: float, access: Access) -> str | None:
    try:
        path = "/_nodes/_local?filter_path=nodes.*.version"
        status, _, body = _get(host, port, path, timeout_s, access)
        if status != 200:
            return None
        nodes: dict[str, Any] = json.loads(body).get("nodes", {})
        for node in nodes.values():
            return str(node.get("version"))
    except (OSError, http.client.HTTPException, ValueError):
        return None
    return None


def probe(
    host: str, port: int, timeout_s: float = 3.0, *, access: Access = PLAIN, nodes: int = 1
) -> Probe:
    """Classify what listens on host:port; healthy needs at least ``nodes`` nodes joined."""
    try:
        status, headers, body = _get(
            host, port, "/_cluster/health?wait_for_status=yellow&timeout=1s", timeout_s, access
        )
    except ConnectionRefusedError:
        return Probe(PortState.FREE)
    except TimeoutError:
        return Probe(PortState.FOREIGN, detail=f"no HTTP answer within {timeout_s:.0f} s")
    except (OSError, http.client.HTTPException) as exc:
        if not port_accepts(host, port):
            return Probe(PortState.FREE)
        speaks = "an HTTPS server" if access.tls is not None else "an HTTP server"
        return Probe(PortState.FOREIGN, detail=f"not {speaks}: {exc.__class__.__name__} {exc}")
    if status == 401 and "security_exception" in body.decode("utf-8", "replace"):
        return Probe(
            PortState.UNHEALTHY, detail="Elasticsearch refused the credentials (401)"
        )  # fmt: skip
    if headers.get("x-elastic-product") != "Elasticsearch":
        return Probe(PortState.FOREIGN, detail=f"HTTP {status} without the Elasticsearch header")
    try:
        answer = json.loads(body)
        health = str(answer.get("status"))
        joined = int(answer.get("number_of_nodes", 0))
    except (ValueError, TypeError, AttributeError):
        health, joined = "unknown", 0
    if status == 200 and health in ("green", "yellow") and joined >= nodes:
        version = _version(host, port, timeout_s, access)
        return Probe(PortState.HEALTHY, health=health, version=version, nodes=joined)
    detail = f"cluster health {health}"
    if joined < nodes:
        detail += f", {joined} of {nodes} nodes joined"
    return Probe(PortState.UNHEALTHY, health=health, detail=detail, nodes=joined)
