"""The local cluster: its shape on disk, its settings, and the real three-node cluster."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from indexer.indices import BLOCKS_INDEX, event_index
from indexer.local_es import LocalElasticsearch, LocalEsConfig, LocalEsConfigError, scratch
from indexer.local_es.cluster import plan_cluster
from indexer.local_es.node import FREE_PORTS, NodeLayout, bindable, node_settings
from indexer.local_es.scratch import free_port_run
from indexer.local_es.security import security_settings
from indexer.local_es.state import wipe_project_state
from indexer.templates import install_templates
from tests.indexer.local_es.test_local_es import _run_cli
from tests.support.collector_build import free_port


@pytest.fixture(autouse=True)
def _own_node_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_AUDIT_LOCAL_ES_DATA", raising=False)
    monkeypatch.delenv("OTEL_AUDIT_LOCAL_ES_NODES", raising=False)


# -- settings -------------------------------------------------------------------


def test_nodes_from_flag_and_environment(tmp_path: Path) -> None:
    env = {"OTEL_AUDIT_CACHE_DIR": str(tmp_path), "OTEL_AUDIT_LOCAL_ES_NODES": "3"}
    assert LocalEsConfig.from_env(env).nodes == 3
    assert LocalEsConfig.from_env(env, nodes=2).nodes == 2
    assert LocalEsConfig.from_env({"OTEL_AUDIT_CACHE_DIR": str(tmp_path)}).nodes is None


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"nodes": 0}, "between 1 and 9"),
        ({"nodes": 10}, "between 1 and 9"),
        ({"url": "http://127.0.0.1:65534", "nodes": 3}, "past 65535"),
        ({"url": "ftp://127.0.0.1:9200"}, "https://"),
    ],
)
def test_bad_cluster_settings_name_the_problem(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(LocalEsConfigError, match=needle):
        LocalEsConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_nodes_env_names_the_variable() -> None:
    with pytest.raises(LocalEsConfigError, match="OTEL_AUDIT_LOCAL_ES_NODES"):
        LocalEsConfig.from_env({"OTEL_AUDIT_LOCAL_ES_NODES": "three"})


def test_node_urls_follow_the_first_port() -> None:
    cfg = LocalEsConfig(url="http://127.0.0.1:9230", nodes=3)
    assert [cfg.node_url(i) for i in range(3)] == [
        "http://127.0.0.1:9230",
        "http://127.0.0.1:9231",
        "http://127.0.0.1:9232",
    ]
    secured = LocalEsConfig.from_env({}, url="http://127.0.0.1:9240", secure=True)
    assert secured.secure and secured.url == "https://127.0.0.1:9240"
    assert secured.node_url(0) == "https://127.0.0.1:9240"


# -- the shape on disk ----------------------------------------------------------


def test_plan_puts_nodes_side_by_side_and_records_the_shape(tmp_path: Path) -> None:
    cfg = LocalEsConfig(url="http://127.0.0.1:9230", data_dir=tmp_path, nodes=3)
    plan = plan_cluster(cfg)
    assert plan.size == 3
    assert [m.layout.root for m in plan.members] == [tmp_path / f"node-{i}" for i in range(3)]
    assert [m.http_port for m in plan.members] == [9230, 9231, 9232]
    assert [m.transport_port for m in plan.members] == [9330, 9331, 9332]
    assert [m.name for m in plan.members] == [f"otel-audit-{p}" for p in (9230, 9231, 9232)]
    assert plan.cluster_name == "otel-audit-local-9230"
    assert plan.seed_hosts() == ["127.0.0.1:9330", "127.0.0.1:9331", "127.0.0.1:9332"]
    assert plan.initial_masters() == [m.name for m in plan.members]
    plan.write_manifest()
    assert json.loads((tmp_path / "cluster.json").read_text())["nodes"] == 3

    # stop and status need no --nodes: the directory says how many there are
    later = plan_cluster(LocalEsConfig(url="http://127.0.0.1:9230", data_dir=tmp_path))
    assert later.size == 3 and later.cluster_name == plan.cluster_name
    with pytest.raises(LocalEsConfigError, match="holds a 3-node cluster, not 2 nodes"):
        plan_cluster(LocalEsConfig(url="http://127.0.0.1:9230", data_dir=tmp_path, nodes=2))


def test_a_formed_cluster_is_never_bootstrapped_again(tmp_path: Path) -> None:
    plan = plan_cluster(LocalEsConfig(url="http://127.0.0.1:9230", data_dir=tmp_path, nodes=3))
    (plan.members[2].layout.data / "_state").mkdir(parents=True)
    assert plan.initial_masters() is None


def test_single_node_keeps_its_files_at_the_top(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()  # a node directory from before cluster.json
    plan = plan_cluster(LocalEsConfig(url="http://127.0.0.1:9215", data_dir=tmp_path))
    assert plan.size == 1
    assert plan.members[0].layout.root == tmp_path
    assert plan.cluster_name == "otel-audit-local"
    assert plan.seed_hosts() is None and plan.initial_masters() is None
    with pytest.raises(LocalEsConfigError, match="holds a 1-node cluster, not 3"):
        plan_cluster(LocalEsConfig(url="http://127.0.0.1:9215", data_dir=tmp_path, nodes=3))


def test_taken_transport_ports_move_only_for_nodes_about_to_start(tmp_path: Path) -> None:
    plan = plan_cluster(LocalEsConfig(url="http://127.0.0.1:9230", data_dir=tmp_path, nodes=3))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        taken = sock.getsockname()[1]
        sock.listen(1)
        members = list(plan.members)
        members[1] = dataclasses.replace(members[1], transport_port=taken)
        members[2] = dataclasses.replace(members[2], transport_port=taken)
        crowded = dataclasses.replace(plan, members=tuple(members))
        moved = crowded.with_free_ports({1})
        assert moved.members[1].transport_port != taken
        assert moved.members[2].transport_port == taken  # may be running: left alone


def test_a_cluster_gets_consecutive_ports_below_the_ephemeral_range() -> None:
    first = free_port_run(3)
    assert FREE_PORTS.start <= first and first + 2 < FREE_PORTS.stop
    for port in (*range(first, first + 3), *range(first + 100, first + 103)):
        assert bindable("127.0.0.1", port)


def test_a_port_run_skips_taken_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = set(range(FREE_PORTS.start, FREE_PORTS.start + 50))
    monkeypatch.setattr(scratch, "bindable", lambda _host, port: port not in taken)
    monkeypatch.setattr(scratch, "FREE_PORTS", range(FREE_PORTS.start, FREE_PORTS.start + 60))
    first = scratch.free_port_run(2)
    assert first >= FREE_PORTS.start + 50
    taken |= set(range(FREE_PORTS.start, FREE_PORTS.start + 200))
    with pytest.raises(OSError, match="no 2 consecutive free ports"):
        scratch.free_port_run(2)
    with pytest.raises(ValueError, match="at least 1"):
        scratch.free_port_run(0)


def test_cluster_node_settings(tmp_path: Path) -> None:
    plan = plan_cluster(LocalEsConfig(url="http://127.0.0.1:9230", data_dir=tmp_path, nodes=3))
    member = plan.members[1]
    settings = node_settings(
        member.layout,
        node_name=member.name,
        bind_host="127.0.0.1",
        http_port=member.http_port,
        transport_port=member.transport_port,
        security=security_settings(False),
        seed_hosts=plan.seed_hosts(),
        initial_masters=plan.initial_masters(),
    )
    assert "discovery.type" not in settings
    assert settings["discovery.seed_hosts"] == plan.seed_hosts()
    assert settings["cluster.initial_master_nodes"] == plan.initial_masters()
    assert settings["cluster.name"] == "otel-audit-local-9230"
    assert settings["path.data"] == str(tmp_path / "node-1" / "data")
    assert settings["xpack.security.enabled"] == "false"


def test_single_node_settings_are_unchanged(tmp_path: Path) -> None:
    settings = node_settings(
        NodeLayout(tmp_path),
        node_name="otel-audit-9233",
        bind_host="127.0.0.1",
        http_port=9233,
        transport_port=9333,
        security=security_settings(False),
    )
    assert settings["discovery.type"] == "single-node"
    assert "discovery.seed_hosts" not in settings


def test_cli_refuses_a_different_node_count_with_exit_code_2(tmp_path: Path) -> None:
    cfg = LocalEsConfig(url="http://127.0.0.1:9230", data_dir=tmp_path, nodes=3)
    plan_cluster(cfg).write_manifest()
    rc, out = _run_cli(
        "local-es", "start", "--json", "--nodes", "2", "--url", cfg.url, "--data-dir", str(tmp_path)
    )
    assert rc == 2
    assert "3-node cluster" in json.loads(out)["message"]


def test_status_of_a_stopped_cluster_lists_every_node(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    plan_cluster(LocalEsConfig(url=url, data_dir=tmp_path, nodes=2)).write_manifest()
    rc, out = _run_cli("local-es", "status", "--json", "--url", url, "--data-dir", str(tmp_path))
    assert rc == 3
    payload = json.loads(out)
    assert payload["nodes"] == 2 and payload["state"] == "stopped"
    assert [m["url"] for m in payload["members"]] == [url, f"http://127.0.0.1:{port + 1}"]


# -- the real cluster -----------------------------------------------------------


@pytest.mark.integration
def test_three_nodes_join_and_replicas_are_placed(
    es_cluster: LocalElasticsearch, cluster_es: Elasticsearch
) -> None:
    status = es_cluster.status()
    assert status.running and status.nodes == 3 and status.joined == 3
    assert all(m.running and m.pid for m in status.members)
    names = {n["name"] for n in cluster_es.cat.nodes(format="json")}
    assert names == {m.name for m in es_cluster.plan.members}
    cluster_es.indices.create(
        index="audit-cluster-replicas",
        settings={"index": {"number_of_shards": 3, "number_of_replicas": 1}},
    )
    try:
        health = cluster_es.cluster.health(
            index="audit-cluster-replicas", wait_for_status="green", timeout="60s"
        )
        assert health["status"] == "green"
        shards = cluster_es.cat.shards(index="audit-cluster-replicas", format="json")
        by_shard: dict[str, set[str]] = {}
        for shard in shards:
            by_shard.setdefault(str(shard["shard"]), set()).add(str(shard["node"]))
        # each primary and its replica live on different nodes
        assert all(len(nodes) == 2 for nodes in by_shard.values())
    finally:
        cluster_es.indices.delete(index="audit-cluster-replicas")


@pytest.mark.integration
def test_a_killed_node_comes_back(
    es_cluster: LocalElasticsearch, cluster_es: Elasticsearch
) -> None:
    cluster_es.indices.create(
        index="audit-cluster-kill", settings={"index": {"number_of_replicas": 1}}
    )
    try:
        cluster_es.index(index="audit-cluster-kill", id="1", document={"n": 1}, refresh=True)
        # Both copies started before a node is killed: otherwise the killed node may hold
        # the only one, and the survivors cannot answer for the data.
        health = cluster_es.cluster.health(
            index="audit-cluster-kill", wait_for_status="green", timeout="25s"
        )
        assert health["status"] == "green", health
        pid = es_cluster.kill_node(2)
        assert es_cluster.node_pid(2) is None
        # Ask the survivors only: the whole-cluster client may still pick the dead node, and
        # its retries end on it again once its dead-node timeout has passed.
        survivors = Elasticsearch(es_cluster.urls[:2], request_timeout=30)
        try:
            health = survivors.cluster.health(
                index="audit-cluster-kill", wait_for_nodes="2", wait_for_status="yellow",
                wait_for_no_initializing_shards=True, timeout="25s",
            )  # fmt: skip
            assert health["number_of_nodes"] == 2 and not health["timed_out"], health
            # the survivors still answer for the data
            assert survivors.get(index="audit-cluster-kill", id="1")["_source"] == {"n": 1}
        finally:
            survivors.close()
        assert es_cluster.ensure_started() is False  # a restart of one node, not a start
        assert es_cluster.node_pid(2) not in (None, pid)
        health = cluster_es.cluster.health(wait_for_nodes="3", timeout="25s")
        assert health["number_of_nodes"] == 3, health
    finally:
        cluster_es.indices.delete(index="audit-cluster-kill")


@pytest.mark.integration
def test_project_indices_get_one_replica_on_the_cluster_and_none_alone(
    clean_cluster: Elasticsearch, clean_es: Elasticsearch
) -> None:
    day = event_index(1_765_000_000 * 1_000_000_000)
    for client, replicas in ((clean_cluster, "1"), (clean_es, "0")):
        install_templates(client)
        client.indices.create(index=day)
        client.indices.create(index=BLOCKS_INDEX)
        health = client.cluster.health(index=f"{day},{BLOCKS_INDEX}", wait_for_status="green",
                                       timeout="60s")  # fmt: skip
        assert health["status"] == "green"
        for index in (day, BLOCKS_INDEX):
            settings = client.indices.get_settings(index=index)[index]["settings"]["index"]
            assert settings["number_of_replicas"] == replicas, (client, index)
        wipe_project_state(client)
