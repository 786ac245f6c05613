"""One connection object for every Elasticsearch client: options, secrets, clear errors."""

from __future__ import annotations

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig, TlsError
from elasticsearch import AuthenticationException

from indexer.es_client import EsConnection, describe_error, sync_client


def test_options_for_each_way_to_authenticate() -> None:
    assert EsConnection().client_options() == {"hosts": ["http://127.0.0.1:9200"]}
    key = EsConnection(url="https://a:9200", api_key="aWQ6a2V5", ca_fingerprint="AB:cd:01")
    assert key.client_options() == {
        "hosts": ["https://a:9200"],
        "api_key": "aWQ6a2V5",
        "ssl_assert_fingerprint": "abcd01",
    }
    cloud = EsConnection(cloud_id="dep:ZXhhbXBsZQ==", username="u", password="p")
    assert cloud.client_options() == {"cloud_id": "dep:ZXhhbXBsZQ==", "basic_auth": ("u", "p")}


def test_environment_and_url_flag() -> None:
    env = {"OTEL_AUDIT_ES_URL": "https://env:9200", "OTEL_AUDIT_ES_API_KEY": "k"}
    assert EsConnection.from_env(env).url == "https://env:9200"
    assert EsConnection.from_env(env, url="https://flag:9200").url == "https://flag:9200"
    assert EsConnection.from_env(env).api_key == "k"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"url": "es:9200"}, "es_url: 'es:9200' must start with http"),
        ({"api_key": "k", "username": "u", "password": "p"}, "give one, not both"),
        ({"username": "u"}, "es_username and es_password go together"),
        ({"ca_file": "/x.pem", "ca_fingerprint": "ab"}, "give one, not both"),
        ({"ca_file": "/nonexistent.pem"}, "is not a readable file"),
    ],
)
def test_bad_settings_name_the_key(kwargs: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        EsConnection(**kwargs)


def test_secrets_stay_out_of_repr_and_redacted_views() -> None:
    conn = EsConnection(api_key="top-secret-key")
    assert "top-secret" not in repr(conn)
    assert conn.redacted()["api_key"] == "<redacted>"
    basic = EsConnection(username="u", password="hunter2")
    assert "hunter2" not in repr(basic) and basic.redacted()["password"] == "<redacted>"


def test_errors_name_their_cause() -> None:
    conn = EsConnection(url="https://es:9200")
    meta = ApiResponseMeta(401, "1.1", HttpHeaders(), 0.0, NodeConfig("https", "es", 9200))
    refused = AuthenticationException("security_exception", meta, {})
    assert "refused the credentials (401)" in describe_error(refused, conn)
    tls = TlsError("certificate verify failed")
    assert "TLS handshake with Elasticsearch at https://es:9200 failed" in describe_error(tls, conn)


def test_clients_carry_the_connection() -> None:
    client = sync_client(EsConnection(url="https://es:9200", username="u", password="p"))
    try:
        assert client.transport.node_pool.all()[0].config.host == "es"
        assert client._headers["authorization"].startswith("Basic ")
    finally:
        client.close()


def test_documented_roles_are_the_roles_the_tests_use() -> None:
    import json
    from pathlib import Path

    from indexer.es_client import ROLES

    text = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    for name, role in ROLES.items():
        assert f"### `{name}`" in text, name
        assert json.dumps(role, indent=2) in text, name
