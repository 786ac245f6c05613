"""Server-side TLS for every listener: OTLP gRPC, OTLP HTTP and the query API.

One ``tls:`` section configures them all: the server's certificate chain and key, an
optional CA file for client certificates and whether one is required (mTLS), and how often
the files are checked for changes. A changed certificate or key is loaded without a
restart: :class:`ServerTls` keeps one :class:`ssl.SSLContext` for the HTTP listeners and
loads the new chain into it (new handshakes use it, established connections keep theirs),
and hands gRPC a credentials fetcher that returns the new chain on the next handshake.
``reload()`` (also run on SIGHUP by ``otel-audit serve``) checks at once.

Without a certificate the listeners are plaintext. Plaintext on any address other than
loopback is refused unless ``tls.insecure: true`` says it is meant (a warning is logged):
tokens and audit events would cross the network in the clear.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CLIENT_AUTH",
    "ServerTls",
    "TlsConfig",
    "is_loopback_host",
    "peer_identity_names",
    "serve_tls_of",
]

log = logging.getLogger("otel_audit.tls")

CLIENT_AUTH = ("none", "optional", "require")


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The ``tls:`` section: one certificate for the OTLP and query API listeners."""

    cert_file: str = ""
    """PEM certificate chain of the server ("" = plaintext listeners)."""
    key_file: str = ""
    """PEM private key of ``cert_file``."""
    client_ca_file: str = ""
    """PEM CA bundle that signs client certificates (mTLS)."""
    client_auth: str = "none"
    """``none``, ``optional`` (verified when sent) or ``require`` (handshake fails without)."""
    reload_interval_s: float = 10.0
    """How often the certificate, key and CA files are checked for changes (0 = never;
    SIGHUP reloads at once)."""
    insecure: bool = False
    """Allow plaintext listeners on a non-loopback address (a warning is logged)."""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    def validate(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("key_file: cert_file and key_file go together")
        if self.client_auth not in CLIENT_AUTH:
            raise ValueError(f"client_auth: {self.client_auth!r} is not one of {CLIENT_AUTH}")
        if self.client_auth != "none" and not self.client_ca_file:
            raise ValueError("client_ca_file: required when client_auth is not none")
        if self.client_ca_file and not self.cert_file:
            raise ValueError("client_ca_file: client certificates need TLS (cert_file)")
        for key in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, key)
            if path and not os.path.isfile(path):
                raise ValueError(f"{key}: {path!r} is not a readable file")

    def check_bind(self, key: str, host: str) -> None:
        """Refuse plaintext on ``host`` unless it is loopback or ``insecure`` is set."""
        if self.enabled or is_loopback_host(host):
            return
        if not self.insecure:
            raise ValueError(
                f"{key}: {host} is not a loopback address and tls has no cert_file; "
                "configure tls.cert_file/tls.key_file, or set tls.insecure: true to serve "
                "plaintext on purpose"
            )
        log.warning(
            "plaintext listener on a non-loopback address (tls.insecure is true)",
            extra={"listener": key, "host": host},
        )


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _mtimes(paths: tuple[str, ...]) -> tuple[float, ...]:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append(st.st_mtime_ns + st.st_size)
        except OSError:
            out.append(-1)
    return tuple(out)


class ServerTls:
    """The listeners' TLS material, reloaded when its files change."""

    def __init__(self, config: TlsConfig) -> None:
        if not config.enabled:
            raise ValueError("tls: no cert_file configured")
        self.config = config
        self._paths = tuple(
            p for p in (config.cert_file, config.key_file, config.client_ca_file) if p
        )
        self._lock = threading.Lock()
        self._stamp = _mtimes(self._paths)
        self._checked = time.monotonic()
        self.generation = 0
        self._chain, self._key, self._ca = self._load_files()
        self.ssl_context = self._new_context()
        self._grpc_config: Any = None
        self._grpc_generation = -1

    def _load_files(self) -> tuple[bytes, bytes, bytes | None]:
        c = self.config
        return (
            _read(c.cert_file),
            _read(c.key_file),
            _read(c.client_ca_file) if c.client_ca_file else None,
        )

    def _new_context(self) -> ssl.SSLContext:
        c = self.config
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(c.cert_file, c.key_file)
        if c.client_ca_file:
            ctx.load_verify_locations(cafile=c.client_ca_file)
        ctx.verify_mode = {
            "none": ssl.CERT_NONE,
            "optional": ssl.CERT_OPTIONAL,
            "require": ssl.CERT_REQUIRED,
        }[c.client_auth]
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def maybe_reload(self) -> bool:
        """Reload when the files changed and the check interval passed; True if reloaded."""
        interval = self.config.reload_interval_s
        if interval <= 0 or time.monotonic() - self._checked < interval:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Reload now if any file changed; True when the new material is in use. A bad new
        file is logged and the current material kept."""
        with self._lock:
            self._checked = time.monotonic()
            stamp = _mtimes(self._paths)
            if stamp == self._stamp:
                return False
            try:
                chain, key, ca = self._load_files()
                ctx = self.ssl_context
                # New handshakes on the existing context use the new chain and CA.
                ctx.load_cert_chain(self.config.cert_file, self.config.key_file)
                if self.config.client_ca_file:
                    ctx.load_verify_locations(cafile=self.config.client_ca_file)
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.error(
                    "TLS files changed but cannot be loaded; keeping the current ones",
                    extra={"error": str(exc)[:300]},
                )
                return False
            self._stamp = stamp
            self._chain, self._key, self._ca = chain, key, ca
            self.generation += 1
            log.info("TLS certificate reloaded", extra={"generation": self.generation})
            return True

    # -- gRPC -------------------------------------------------------------------------

    def _grpc_cert_config(self) -> Any:
        import grpc

        if self._grpc_generation != self.generation:
            self._grpc_config = grpc.ssl_server_certificate_configuration(
                [(self._key, self._chain)], root_certificates=self._ca
            )
            self._grpc_generation = self.generation
        return self._grpc_config

    def grpc_credentials(self) -> Any:
        """Server credentials that pick up reloaded files on the next handshake."""
        import grpc

        initial = self._grpc_cert_config()
        served = [self.generation]

        def fetch() -> Any:
            self.maybe_reload()
            if served[0] == self.generation:
                return None  # keep the current configuration
            served[0] = self.generation
            return self._grpc_cert_config()

        return grpc.dynamic_ssl_server_credentials(
            initial, fetch, require_client_authentication=self.config.client_auth == "require"
        )

    async def reload_forever(self) -> None:
        """Check the files every ``reload_interval_s`` until cancelled."""
        interval = self.config.reload_interval_s
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.reload)


def serve_tls_of(config: Any) -> ServerTls | None:
    """The listeners' TLS for a receiver configuration (None: plaintext)."""
    sections = getattr(config, "sections", None) or {}
    section = sections.get("tls")
    if isinstance(section, TlsConfig) and section.enabled:
        return ServerTls(section)
    return None


def peer_identity_names(peercert: dict[str, Any] | None) -> list[str]:
    """The names a verified client certificate (``ssl.getpeercert()``) carries: the
    subject's commonName and every DNS/URI/email subjectAltName, as ``CN=...``,
    ``DNS:...``, ``URI:...``, ``email:...``."""
    if not peercert:
        return []
    names: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(f"CN={value}")
    for kind, value in peercert.get("subjectAltName", ()):
        if kind in ("DNS", "URI", "email"):
            names.append(f"{kind}:{value}")
    return names
