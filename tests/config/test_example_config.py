"""config/receiver.example.yaml shows every key of every section, with its default."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from receiver.config import SECTIONS, ReceiverConfig, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "receiver.example.yaml"


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _same(shown: Any, default: Any) -> bool:
    if isinstance(default, tuple):
        return list(default) == shown
    return bool(shown == default)


def test_example_lists_every_key_of_every_section_with_its_default() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    top = {f.name: f for f in dataclasses.fields(ReceiverConfig)}
    for name, f in top.items():
        if name in ("sections", "source"):
            continue
        assert name in data, f"example lacks top-level key {name}"
        assert _same(data[name], _default(f)), f"{name}: example {data[name]!r}"
    for section, cls in SECTIONS.items():
        assert isinstance(data.get(section), dict), f"example lacks the {section}: section"
        for f in dataclasses.fields(cls):
            assert f.name in data[section], f"example lacks {section}.{f.name}"
            shown = data[section][f.name]
            assert _same(shown, _default(f)), f"{section}.{f.name}: example {shown!r}"


def test_example_loads() -> None:
    config = load_config(EXAMPLE, env={})
    assert config == ReceiverConfig(sections=config.sections, source=config.source)
