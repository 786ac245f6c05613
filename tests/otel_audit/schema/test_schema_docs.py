"""docs/schema.md is generated from the schema and must not go stale."""

from __future__ import annotations

import json

import pytest

from otel_audit.cli import main
from otel_audit.schema import load_schema
from otel_audit.schema.docs import DOCS_PATH, REGENERATE, example_record, render
from otel_audit.validate import validate


def test_docs_schema_md_is_current() -> None:
    current = DOCS_PATH.read_text(encoding="utf-8") if DOCS_PATH.exists() else ""
    assert current == render(), (
        f"{DOCS_PATH} is stale: regenerate it with `{REGENERATE}` and commit the result"
    )


def test_reference_names_everything_in_the_schema() -> None:
    schema = load_schema()
    text = render()
    for f in schema.fields:
        assert f"`{f.attribute}`" in text and f"`{f.param}`" in text and f"`{f.stored}`" in text
        for value in f.enum:
            assert f"`{value}`" in text
    for rf in schema.resource_fields:
        assert f"`{rf.attribute}`" in text
    for d in (*schema.record_fields, *schema.derived_fields):
        assert f"`{d['stored']}`" in text
    for value in schema.constants.values():
        assert f"`{value}`" in text
    for name in schema.raw["limits"]:
        assert f"`{name}`" in text
    assert schema.truncation_marker in text
    for rule in ("not_audit_event", "max_depth", "encoding", "attribute_key"):
        assert f"`{rule}`" in text


def test_example_is_valid_and_deterministic() -> None:
    assert validate(example_record()) == []
    assert render() == render()


def test_cli_docs_check_and_write(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    out = Path(str(tmp_path)) / "schema.md"
    assert main(["schema", "docs", "--check", "--output", str(out)]) == 1
    assert "regenerate" in capsys.readouterr().err
    assert main(["schema", "docs", "--write", "--output", str(out)]) == 0
    assert main(["schema", "docs", "--check", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render()


def test_cli_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["marker_attribute"] == "audit.action"
    assert main(["schema", "show"]) == 0
    assert "audit.actor.id" in capsys.readouterr().out
