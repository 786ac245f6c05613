"""The secured mode: certificates, passwords, file users and roles on the real server."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_exc

from indexer.local_es import LocalElasticsearch, LocalEsConfigError
from indexer.local_es.security import (
    LocalUser,
    ensure_security_files,
    security_settings,
    write_roles,
)

WRITER_ROLE = {
    "cluster": ["monitor"],
    "indices": [{"names": ["audit-secure-*"], "privileges": ["create_doc", "create_index"]}],
}
READER_ROLE = {"indices": [{"names": ["audit-secure-*"], "privileges": ["read"]}]}


# -- files ----------------------------------------------------------------------


def test_ca_signs_a_node_certificate_for_loopback(tmp_path: Path) -> None:
    files = ensure_security_files(tmp_path)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    chain = x509.load_pem_x509_certificates(files.node_cert.read_bytes())
    assert chain[1] == ca  # the served chain ends with the CA
    node = chain[0]
    node.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert isinstance(node.public_key(), ec.EllipticCurvePublicKey)
    for secret in (files.ca_key, files.node_key, files.elastic_password_file):
        assert secret.stat().st_mode & 0o077 == 0, secret
    # Python's own TLS stack accepts the CA file as it is written.
    ssl.create_default_context(cafile=str(files.ca_cert))


def test_security_files_are_made_once(tmp_path: Path) -> None:
    first = ensure_security_files(tmp_path)
    pins = (first.ca_fingerprint(), first.node_fingerprint(), first.elastic_password())
    again = ensure_security_files(tmp_path)
    assert (again.ca_fingerprint(), again.node_fingerprint(), again.elastic_password()) == pins
    assert len(first.elastic_password()) >= 20


def test_secured_settings_turn_on_tls_everywhere() -> None:
    settings = security_settings(True)
    assert settings["xpack.security.enabled"] == "true"
    assert settings["xpack.security.http.ssl.enabled"] == "true"
    assert settings["xpack.security.transport.ssl.enabled"] == "true"
    assert security_settings(False) == {"xpack.security.enabled": "false"}


def test_roles_file_is_block_yaml_with_each_role_at_column_0(tmp_path: Path) -> None:
    # Elasticsearch splits roles.yml into roles by lines before parsing them.
    write_roles(tmp_path, {"b": READER_ROLE})
    write_roles(tmp_path, {"a": WRITER_ROLE})
    text = (tmp_path / "roles.yml").read_text()
    tops = [line for line in text.splitlines() if line and not line[0].isspace()]
    assert tops == ["a:", "b:"]


@pytest.mark.parametrize(
    ("name", "password", "needle"),
    [("elastic", "long-enough", "built-in"), ("a b", "long-enough", "letters"), ("u", "x", "6")],
)
def test_bad_users_are_refused(name: str, password: str, needle: str) -> None:
    with pytest.raises(LocalEsConfigError, match=needle):
        LocalUser(name, password)


def test_users_need_the_secured_mode() -> None:
    with pytest.raises(LocalEsConfigError, match="secured mode"):
        LocalElasticsearch(url="http://127.0.0.1:9200", users=[LocalUser("w", "password")])


# -- the real secured node ------------------------------------------------------


@pytest.mark.integration
def test_https_with_the_ca_and_the_elastic_password(secure_es: LocalElasticsearch) -> None:
    status = secure_es.status()
    assert status.running and status.secure and status.url.startswith("https://")
    assert status.ca_file == str(secure_es.security.ca_cert)
    client = Elasticsearch(**secure_es.client_options(), request_timeout=30)
    me = client.security.authenticate()
    assert me["username"] == "elastic" and "superuser" in me["roles"]
    pinned = Elasticsearch(
        secure_es.urls,
        basic_auth=("elastic", secure_es.elastic_password()),
        ssl_assert_fingerprint=secure_es.security.node_fingerprint(),
    )
    assert pinned.cluster.health()["status"] in ("green", "yellow")


@pytest.mark.integration
def test_refusals_are_the_real_server_s(secure_es: LocalElasticsearch, tmp_path: Path) -> None:
    wrong_password = Elasticsearch(**secure_es.client_options(password="not-the-password"))
    with pytest.raises(es_exc.AuthenticationException):
        wrong_password.security.authenticate()
    ca = str(secure_es.security.ca_cert)
    unknown_key = Elasticsearch(secure_es.urls, api_key="bm90OmEta2V5", ca_certs=ca)
    with pytest.raises(es_exc.AuthenticationException):
        unknown_key.security.authenticate()
    other_ca = ensure_security_files(tmp_path).ca_cert  # a CA that signed nothing here
    untrusted = Elasticsearch(
        secure_es.urls, basic_auth=("elastic", secure_es.elastic_password()),
        ca_certs=str(other_ca), retry_on_timeout=False, max_retries=0,
    )  # fmt: skip
    with pytest.raises(es_exc.SSLError) as refused:
        untrusted.info()
    assert "CERTIFICATE_VERIFY_FAILED" in repr(refused.value)
    plain = Elasticsearch(secure_es.urls[0].replace("https://", "http://"), max_retries=0)
    with pytest.raises(es_exc.ConnectionError):
        plain.info()


@pytest.mark.integration
def test_file_users_get_what_their_roles_grant(secure_es: LocalElasticsearch) -> None:
    secure_es.add_users(
        [
            LocalUser("secure-writer", "writer-password", ("secure_writer",)),
            LocalUser("secure-reader", "reader-password", ("secure_reader",)),
        ],
        roles={"secure_writer": WRITER_ROLE, "secure_reader": READER_ROLE},
    )
    admin = Elasticsearch(**secure_es.client_options())
    writer = Elasticsearch(**secure_es.client_options("secure-writer", "writer-password"))
    reader = Elasticsearch(**secure_es.client_options("secure-reader", "reader-password"))
    try:
        writer.create(index="audit-secure-1", id="e1", document={"n": 1}, refresh=True)
        with pytest.raises(es_exc.AuthorizationException, match="secure-writer"):
            writer.search(index="audit-secure-1")
        assert reader.search(index="audit-secure-1")["hits"]["total"]["value"] == 1
        with pytest.raises(es_exc.AuthorizationException, match="secure-reader"):
            reader.create(index="audit-secure-1", id="e2", document={"n": 2})
        with pytest.raises(es_exc.AuthorizationException):
            writer.create(index="other-index", id="e3", document={"n": 3})
    finally:
        admin.indices.delete(index="audit-secure-*", allow_no_indices=True)


@pytest.mark.integration
def test_api_keys_cannot_be_created_on_this_distribution(secure_es: LocalElasticsearch) -> None:
    # Documented limit (indexer/local_es/README.md): the .security index needs the
    # analysis-common module, which the local distribution lacks.
    admin = Elasticsearch(**secure_es.client_options())
    with pytest.raises(es_exc.BadRequestError, match="pattern_capture"):
        admin.security.create_api_key(name="never")
    admin.indices.delete(index=".security*", expand_wildcards="all", ignore_unavailable=True)
