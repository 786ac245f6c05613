"""The README's command list names every command the CLI has."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from otel_audit.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> dict[str, list[str]]:
    parser = build_parser()
    out: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = [
                    child
                    for a in sub._actions
                    if isinstance(a, argparse._SubParsersAction)
                    for child in a.choices
                ]
    return out


def test_readme_lists_every_command_and_sub_command() -> None:
    text = README.read_text(encoding="utf-8")
    block = text.split("## The command line", 1)[1].split("```")[1]
    lines = [line for line in block.splitlines() if line.startswith("otel-audit ")]
    for command, children in _commands().items():
        line = next((ln for ln in lines if re.search(rf"otel-audit {command}\b(?!-)", ln)), None)
        assert line is not None, f"README does not list `otel-audit {command}`"
        for child in children:
            assert re.search(rf"\b{child}\b", line), f"README: `{command} {child}` missing"
    assert "otel-audit --version" in block
