"""The secured mode of the local node: a CA, a node certificate, passwords and file users.

Production clusters run with security on (HTTPS, authenticated clients, roles); the secured
local node lets tests exercise exactly that against the real server:

- a CA and one node certificate made here with ``cryptography`` (EC P-256, SANs
  ``localhost``, ``127.0.0.1`` and ``::1``), kept in ``<cluster dir>/security/`` so a client's
  CA file stays valid across restarts, and copied into each node's ``config/certs/``;
- the ``elastic`` superuser's password, put into each node's keystore as
  ``bootstrap.password`` (the reserved realm answers with it while no security index
  exists, which on this distribution is always);
- users of the file realm, added with the distribution's own ``bin/elasticsearch-users``,
  with roles written to ``roles.yml``; both live in a staging
  config directory (``security/realm/``) copied into every node's config, so a node
  restarted alone comes back with the same users, and running nodes reload them.

API keys and native users cannot be created on this distribution: they live in the
``.security`` index, whose mapping needs the ``analysis-common`` module it lacks.

The CA key and the ``elastic`` password are files of mode 0600 in ``security/``; the
certificate, its key and the realm are copied into each node's config, which belongs to
the node's (service) account.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import pwd
import secrets
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from indexer.local_es.dist import JavaRuntime
from indexer.local_es.errors import LocalEsConfigError, LocalEsError

__all__ = [
    "CERTS_SUBDIR",
    "ELASTIC_USER",
    "EsTools",
    "LocalUser",
    "SecurityFiles",
    "copy_realm",
    "ensure_security_files",
    "install_node_certs",
    "prepare_realm",
    "security_settings",
    "write_roles",
]

ELASTIC_USER = "elastic"
"""The built-in superuser; its password is the keystore's ``bootstrap.password``."""

CERTS_SUBDIR = "certs"
"""Where each node's config keeps its copy of the CA, node chain and key."""

_CERT_DAYS = 3650
_USER_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@")


@dataclass(frozen=True)
class LocalUser:
    """A file-realm user of the secured node."""

    name: str
    password: str
    roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= _USER_NAME_CHARS:
            raise LocalEsConfigError(f"user name {self.name!r}: use letters, digits and _-.@")
        if self.name == ELASTIC_USER:
            raise LocalEsConfigError("user name 'elastic' is the built-in superuser")
        if len(self.password) < 6:
            raise LocalEsConfigError(f"user {self.name!r}: a password needs 6 characters or more")


@dataclass(frozen=True)
class SecurityFiles:
    """What a client of the secured node needs, all under ``<cluster dir>/security/``."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """PEM of the CA that signed the node certificate (give it to clients)."""
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA's private key (0600)."""
        return self.root / "ca.key"

    @property
    def node_cert(self) -> Path:
        """PEM chain served by every node: the node certificate, then the CA."""
        return self.root / "node.crt"

    @property
    def node_key(self) -> Path:
        """The node certificate's private key."""
        return self.root / "node.key"

    @property
    def elastic_password_file(self) -> Path:
        """The ``elastic`` user's password (0600)."""
        return self.root / "elastic.password"

    @property
    def realm(self) -> Path:
        """The staging config directory the distribution's tools write: keystore (with
        ``bootstrap.password``), ``users``, ``users_roles`` and ``roles.yml``, copied into
        every node's config on start and whenever users or roles change."""
        return self.root / "realm"

    def elastic_password(self) -> str:
        """The ``elastic`` user's password."""
        return self.elastic_password_file.read_text(encoding="utf-8").strip()

    def user_names(self) -> set[str]:
        """The file-realm users defined so far."""
        return _file_user_names(self.realm)

    def ca_fingerprint(self) -> str:
        """SHA-256 of the CA certificate (DER), lower-case hex."""
        return _fingerprint(self.ca_cert)

    def node_fingerprint(self) -> str:
        """SHA-256 of the node certificate (DER), lower-case hex: the certificate the
        server presents first, which fingerprint-pinning clients compare."""
        return _fingerprint(self.node_cert)


def _fingerprint(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o644)


def ensure_security_files(cluster_dir: Path) -> SecurityFiles:
    """Make the CA, the node certificate and the ``elastic`` password once; reuse them."""
    files = SecurityFiles(cluster_dir / "security")
    files.root.mkdir(parents=True, exist_ok=True)
    os.chmod(files.root, 0o755)  # ca.crt is for clients; the secrets are 0600 inside
    if not (files.ca_cert.is_file() and files.ca_key.is_file()):
        _make_ca(files)
    if not (files.node_cert.is_file() and files.node_key.is_file()):
        _make_node_cert(files)
    if not files.elastic_password_file.is_file():
        _write_secret(files.elastic_password_file, secrets.token_urlsafe(18).encode())
    return files


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "otel-audit local Elasticsearch"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    # A day of slack for clocks that disagree a little.
    return now - datetime.timedelta(days=1), now + datetime.timedelta(days=_CERT_DAYS)


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True,
    crl_sign=True, encipher_only=False, decipher_only=False,
)  # fmt: skip
_NODE_USAGE = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)


def _make_ca(files: SecurityFiles) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("otel-audit local CA")
    start, end = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_secret(files.ca_key, _private_pem(key))
    _write_public(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    # A new CA invalidates any node certificate signed by the old one.
    files.node_cert.unlink(missing_ok=True)


def _make_node_cert(files: SecurityFiles) -> None:
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise LocalEsError(f"{files.ca_key} is not the EC key this tool makes; delete security/")
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity()
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("otel-audit local node"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(_NODE_USAGE, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_secret(files.node_key, _private_pem(key))
    # The chain lets a client that trusts only the CA build the path, and lets one that
    # pins a fingerprint see the CA as well.
    chain = cert.public_bytes(serialization.Encoding.PEM) + files.ca_cert.read_bytes()
    _write_public(files.node_cert, chain)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def install_node_certs(files: SecurityFiles, config_dir: Path) -> None:
    """Copy the CA, the node chain and its key into a node's ``config/certs/``."""
    target = config_dir / CERTS_SUBDIR
    target.mkdir(exist_ok=True)
    for src in (files.ca_cert, files.node_cert, files.node_key):
        (target / src.name).write_bytes(src.read_bytes())
        os.chmod(target / src.name, 0o600 if src == files.node_key else 0o644)


def security_settings(secure: bool) -> dict[str, str | list[str]]:
    """The ``xpack.security.*`` lines of elasticsearch.yml (paths relative to the config)."""
    if not secure:
        return {"xpack.security.enabled": "false"}
    cert, key, ca = (f"{CERTS_SUBDIR}/{n}" for n in ("node.crt", "node.key", "ca.crt"))
    return {
        "xpack.security.enabled": "true",
        # Users and roles added to a running node take effect within a second.
        "resource.reload.interval.high": "1s",
        "xpack.security.http.ssl.enabled": "true",
        "xpack.security.http.ssl.certificate": cert,
        "xpack.security.http.ssl.key": key,
        # Nodes of a cluster authenticate each other with the same CA.
        "xpack.security.transport.ssl.enabled": "true",
        "xpack.security.transport.ssl.verification_mode": "certificate",
        "xpack.security.transport.ssl.certificate": cert,
        "xpack.security.transport.ssl.key": key,
        "xpack.security.transport.ssl.certificate_authorities": [ca],
    }


@dataclass(frozen=True)
class EsTools:
    """Runs the distribution's command-line tools (``bin/elasticsearch-*``) for one node
    config directory, as the account the node runs as."""

    es_home: Path
    java: JavaRuntime
    user: pwd.struct_passwd | None

    def run(self, tool: str, args: Sequence[str], config_dir: Path, stdin: str = "") -> None:
        """Run ``bin/<tool> args`` with ES_PATH_CONF=config_dir; raise on failure."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(config_dir.parent),
            "ES_JAVA_HOME": str(self.java.home),
            "ES_PATH_CONF": str(config_dir),
        }
        as_user: dict[str, Any] = {}
        if self.user is not None:
            as_user = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        proc = subprocess.run(
            [str(self.es_home / "bin" / tool), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=config_dir.parent,
            timeout=120,
            check=False,
            **as_user,
        )
        if proc.returncode != 0:
            # useradd's command line holds a password: name the tool and action only. Java
            # stack frames say little; the lines above them say what went wrong.
            lines = (proc.stdout + proc.stderr).strip().splitlines()
            output = " | ".join(x.strip() for x in lines if not x.strip().startswith("at "))[:800]
            raise LocalEsError(f"bin/{tool} {args[0]} failed (exit {proc.returncode}): {output}")

    def set_bootstrap_password(self, config_dir: Path, password: str) -> None:
        """Create the node's keystore when missing and store ``bootstrap.password`` in it."""
        if not (config_dir / "elasticsearch.keystore").is_file():
            self.run("elasticsearch-keystore", ["create"], config_dir)
        self.run(
            "elasticsearch-keystore",
            ["add", "--force", "--stdin", "bootstrap.password"],
            config_dir,
            stdin=password,
        )

    def add_file_users(self, config_dir: Path, users: Sequence[LocalUser]) -> None:
        """Add ``users`` to the file realm of the node whose config is ``config_dir``.

        A user that exists already is removed first, so a changed password or role applies.
        """
        existing = _file_user_names(config_dir)
        for local in users:
            if local.name in existing:
                self.run("elasticsearch-users", ["userdel", local.name], config_dir)
            args = ["useradd", local.name, "-p", local.password]
            if local.roles:
                args += ["-r", ",".join(local.roles)]
            self.run("elasticsearch-users", args, config_dir)


def _file_user_names(config_dir: Path) -> set[str]:
    try:
        text = (config_dir / "users").read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    return {line.split(":", 1)[0] for line in text.splitlines() if ":" in line}


REALM_FILES = ("elasticsearch.keystore", "users", "users_roles", "roles.yml")
"""What the realm staging directory hands to every node's config."""


def prepare_realm(files: SecurityFiles, tools: EsTools) -> None:
    """Make the realm staging directory once: a keystore holding ``bootstrap.password``
    and empty user files (``elasticsearch-users`` refuses to run without them)."""
    realm = files.realm
    if (realm / "elasticsearch.keystore").is_file():
        return
    realm.mkdir(mode=0o700, exist_ok=True)
    (realm / "elasticsearch.yml").write_text("xpack.security.enabled: true\n", encoding="utf-8")
    for name in ("users", "users_roles"):
        (realm / name).touch()
    (realm / "roles.yml").write_text("", encoding="utf-8")
    if tools.user is not None:
        for path in [realm, *realm.iterdir()]:
            os.chown(path, tools.user.pw_uid, tools.user.pw_gid)
    tools.set_bootstrap_password(realm, files.elastic_password())


def write_roles(config_dir: Path, roles: Mapping[str, Any]) -> None:
    """Merge ``roles`` into ``roles.yml``.

    Block-style YAML with each role at column 0: Elasticsearch splits the file into roles
    line by line before parsing each, so flow style (JSON) is not read.
    """
    path = config_dir / "roles.yml"
    try:
        current = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        current = {}
    merged = {**current, **roles}
    tmp = path.with_name(".roles.yml.tmp")
    tmp.write_text(yaml.safe_dump(merged, default_flow_style=False), encoding="utf-8")
    st = config_dir.stat()
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


def copy_realm(files: SecurityFiles, config_dir: Path) -> None:
    """Copy the realm's keystore, users and roles into a node's config (atomically per
    file, owned like the config directory, so a running node reloads a whole file)."""
    st = config_dir.stat()
    for name in REALM_FILES:
        src = files.realm / name
        tmp = config_dir / f".{name}.tmp"
        tmp.write_bytes(src.read_bytes())
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, 0o640)
        os.replace(tmp, config_dir / name)
