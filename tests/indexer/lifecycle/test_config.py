"""The ``lifecycle:`` section: PCI DSS defaults, rules by category and tenant, and bad
configurations refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.lifecycle.config import DayPolicy, LifecycleConfig, PolicyRule
from receiver.config import ConfigError, load_config


def test_defaults_meet_pci_dss_10_5_1() -> None:
    config = load_config(None, env={})
    lifecycle = config.section("lifecycle", LifecycleConfig)
    assert lifecycle.hot_days >= 90  # three months immediately available
    assert lifecycle.retain_days >= 365  # twelve months kept
    assert lifecycle.enabled and lifecycle.cold_store.url == "archive"


def test_the_most_specific_rule_wins_and_a_day_keeps_the_longest() -> None:
    config = LifecycleConfig(
        hot_days=90,
        retain_days=365,
        rules=(
            PolicyRule(category="authentication", hot_days=30),
            PolicyRule(tenant="acme", retain_days=2555),
            PolicyRule(tenant="acme", category="authentication", hot_days=180),
        ),
    )
    assert config.policy_for("authentication", "") == DayPolicy(30, 365)
    assert config.policy_for("data_change", "acme") == DayPolicy(90, 2555)
    assert config.policy_for("authentication", "acme") == DayPolicy(180, 2555)
    assert config.policy_for("data_change", "") == DayPolicy(90, 365)
    # A day with authentication events of nobody and data changes of acme:
    assert config.policy_for_day([("authentication", ""), ("data_change", "acme")]) == DayPolicy(
        90, 2555
    )


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("lifecycle:\n  hot_days: 100\n  retain_days: 30\n", "lifecycle.retain_days"),
        ("lifecycle:\n  rules:\n    - {hot_days: 3}\n", "lifecycle.rules[0]"),
        ("lifecycle:\n  rules:\n    - {tenant: a, hot_days: 400}\n", "lifecycle.rules[0]"),
        ("lifecycle:\n  cold_store:\n    url: ftp://x/y\n", "lifecycle.cold_store.url"),
        ("lifecycle:\n  cold_store:\n    bucket: x\n", "lifecycle.cold_store.bucket: unknown key"),
        ("lifecycle:\n  hot_days: soon\n", "lifecycle.hot_days: expected int"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, yaml: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path, env={})
