"""docs/other-languages.md, written by hand for languages without a helper, agrees with the schema.

The page keeps the raw attribute contract (for Java, .NET and any other OTLP client) in
prose, in code for several SDKs and as an OTLP/JSON request. Each part is read here and
held to the schema file, through the project's own validator wherever a record can be
built, so that a change of the schema that the page does not follow fails this test:

- the prose: which attributes are always required, which categories need a resource, which
  OpenTelemetry attributes stand in for the actor, which fields are arrays, and the
  severity text of each outcome;
- every code example (Go, Java, TypeScript): each attribute it sets is one of the schema's,
  the record it builds (its literal values, with a plausible value for each variable) is
  valid, the event name is the action and the severity is the one the outcome has;
- the OTLP/JSON request: its first record is valid, and the partial success shown is the
  one the receiver answers for the second.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.validate import summarize, validate
from receiver.otlp.decode import decode_logs_json

DOC = Path(__file__).resolve().parents[3] / "docs" / "other-languages.md"
SCHEMA = load_schema()
FIELDS = {f.attribute: f for f in SCHEMA.fields}
# OTel severity numbers 9-12 are INFO, 13-16 WARN (the log data model).
SEVERITY_TEXT = {9: "INFO", 13: "WARN"}
PLACEHOLDER_EVENT_ID = "019b7b3a-5c00-7abc-8def-0123456789ab"


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def _section(title: str) -> str:
    text = _text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def _ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


# --- the prose -----------------------------------------------------------------------------


def _contract_bullets() -> list[str]:
    section = _section("The contract")
    return [
        " ".join(b.split()) for b in re.findall(r"^- (.*?)(?=^- |^\S|\Z)", section, re.M | re.S)
    ]


def test_the_required_attributes_are_the_schemas() -> None:
    bullet = next(b for b in _contract_bullets() if "always required" in b)
    always, _, rest = bullet.partition("are always required")
    assert set(_ticked(always)) == {f.attribute for f in SCHEMA.fields if f.required == "always"}
    by_category, _, categories = rest.partition(" too for the ")
    assert set(_ticked(by_category)) == set(SCHEMA.resource_category_attributes)
    # "the data, permission and configuration categories": each named word starts the name
    # of a category that needs a resource, and every such category is named.
    words = set(re.findall(r"[a-z_]+", categories.split("categories")[0])) - {"and", "the"}
    needing = SCHEMA.resource_required_categories
    assert {c for c in needing if any(c.startswith(w) for w in words)} == needing
    assert all(any(c.startswith(w) for c in needing) for w in words), words


def test_array_attributes_are_named_as_arrays() -> None:
    bullet = next(b for b in _contract_bullets() if "attribute values are" in b)
    arrays = {f.attribute for f in SCHEMA.fields if f.array}
    named = set(re.findall(r"`([^`]+)`[^;`]*?array", bullet))
    assert named == arrays, f"the page says {bullet!r}; array fields are {sorted(arrays)}"


def test_the_resource_carries_the_required_resource_attributes() -> None:
    bullet = next(b for b in _contract_bullets() if b.startswith("the resource carries"))
    required = {rf.attribute for rf in SCHEMA.resource_fields if rf.required == "always"}
    assert set(_ticked(bullet)) == required


def test_the_severity_of_each_outcome_is_the_schemas() -> None:
    bullet = next(b for b in _contract_bullets() if "severity from the outcome" in b)
    pairs = re.findall(r"(INFO|WARN) for `(\w+)` and `(\w+)`", bullet)
    said = {outcome: text for text, *outcomes in pairs for outcome in outcomes}
    expected = {outcome: SEVERITY_TEXT[n] for outcome, n in SCHEMA.severity.items()}
    assert said == expected


def test_the_semconv_stand_ins_are_the_schemas_aliases() -> None:
    text = " ".join(_text().split())
    sentence = re.search(r"The OpenTelemetry attributes (.*?) stand in for (.*?) when", text)
    assert sentence, "the sentence naming the OpenTelemetry stand-ins for the actor is gone"
    stand_ins = re.findall(r"`([^`]+)`(?: \(or `([^`]+)`\))?", sentence.group(1))
    targets = _ticked(sentence.group(2))
    assert len(stand_ins) == len(targets)
    said = {
        target: tuple(a for a in pair if a) for target, pair in zip(targets, stand_ins, strict=True)
    }
    aliased = {f.attribute: f.aliases for f in SCHEMA.fields if f.aliases}
    assert said == aliased


# --- the code examples ---------------------------------------------------------------------


@dataclass
class Example:
    """What one code example sets: attributes (None for a variable), event name, severity."""

    name: str
    attributes: dict[str, str | None] = field(default_factory=dict)
    event_name: str | None = None
    severity: str | None = None  # INFO / WARN, from the severity constant
    severity_text: str | None = None


def _group(pattern: str, code: str) -> str:
    """The first group of ``pattern`` in ``code``; a clear failure when the code lost it."""
    match = re.search(pattern, code, re.S)
    assert match is not None, f"no match for {pattern!r} in the example:\n{code}"
    return match.group(1)


def _literal(expr: str) -> str | None:
    expr = expr.strip()
    match = re.fullmatch(r"\"([^\"]*)\"|'([^']*)'", expr)
    return None if match is None else (match.group(1) or match.group(2) or "")


def _go(code: str) -> Example:
    ex = Example("Go")
    for key, value in re.findall(r'attribute\.String\("([^"]+)",\s*(.+?)\),?\s*$', code, re.M):
        ex.attributes[key] = _literal(value)
    ex.event_name = _literal(_group(r"SetEventName\((.+?)\)", code))
    ex.severity = _group(r"SetSeverity\(log\.Severity(\w+)\)", code).upper()
    ex.severity_text = _literal(_group(r"SetSeverityText\((.+?)\)", code))
    return ex


def _java(code: str) -> Example:
    ex = Example("Java")
    pattern = r'\.setAttribute\(AttributeKey\.stringKey\("([^"]+)"\),\s*(.+?)\)\s*$'
    for key, value in re.findall(pattern, code, re.M):
        ex.attributes[key] = _literal(value)
    ex.event_name = _literal(_group(r"\.setEventName\((.+?)\)", code))
    ex.severity = _group(r"\.setSeverity\(Severity\.(\w+)\)", code)
    ex.severity_text = _literal(_group(r"\.setSeverityText\((.+?)\)", code))
    return ex


def _typescript(code: str) -> Example:
    ex = Example("TypeScript")
    attributes = _group(r"attributes: \{(.*?)\}", code)
    for key, value in re.findall(r"^\s*'([^']+)':\s*(.+?),?\s*$", attributes, re.M):
        ex.attributes[key] = _literal(value)
    ex.event_name = _literal(_group(r"eventName: (.+?),", code))
    ex.severity = _group(r"severityNumber: SeverityNumber\.(\w+)", code)
    ex.severity_text = _literal(_group(r"severityText: (.+?),", code))
    return ex


def _examples() -> list[Example]:
    found: list[Example] = []
    for title, language, read in (
        ("Go", "go", _go),
        ("Java", "java", _java),
        ("JavaScript / TypeScript (Node.js)", "ts", _typescript),
    ):
        # The example that emits is the block that sets attributes (others set up the SDK).
        blocks = [b for b in _code_blocks(_section(title), language) if "audit.action" in b]
        assert len(blocks) == 1, f"{title}: expected one emitting example, found {len(blocks)}"
        found.append(read(blocks[0]))
    return found


EXAMPLES = _examples()


def _placeholder(attribute: str) -> str:
    if attribute == "audit.event.id":
        return PLACEHOLDER_EVENT_ID
    spec = FIELDS[attribute]
    return spec.enum[0] if spec.enum else spec.example or "x-1"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_a_code_example_sets_only_schema_attributes_and_builds_a_valid_record(
    example: Example,
) -> None:
    unknown = set(example.attributes) - set(FIELDS)
    assert not unknown, f"{example.name} sets attributes the schema does not have: {unknown}"
    assert "audit.event.id" in example.attributes, "the contract asks for an emitter's id"
    attributes = {k: v if v is not None else _placeholder(k) for k, v in example.attributes.items()}
    now = time.time_ns()
    record = LogRecordData(
        attributes=attributes,
        resource={"service.name": "billing"},
        time_unix_nano=now,
        observed_time_unix_nano=now,
        severity_text=example.severity_text or "",
        event_name=example.event_name or "",
    )
    assert validate(record, now_ns=now) == []
    action = example.attributes.get("audit.action")
    outcome = example.attributes.get("audit.outcome")
    assert action is not None and outcome is not None, (
        "the example's action and outcome are literals"
    )
    assert example.event_name == action
    expected = SEVERITY_TEXT[SCHEMA.severity[outcome]]
    assert example.severity == expected and example.severity_text == expected


def test_every_language_with_a_raw_example_is_checked() -> None:
    titles = re.findall(r"^## (.+)$", _text(), re.M)
    with_code = {
        t for t in titles if re.search(r"```(go|java|ts|js|cs|csharp|kotlin|python)\n", _section(t))
    }
    with_code -= {"Helpers for Node.js and Go"}
    assert with_code == {"Go", "Java", "JavaScript / TypeScript (Node.js)"}, (
        "a new raw example needs its reader in this test"
    )


# --- the OTLP/JSON request -----------------------------------------------------------------


def test_the_curl_request_and_its_partial_success_are_what_the_receiver_says() -> None:
    section = _section("Try it with curl (OTLP/JSON)")
    (script,) = _code_blocks(section, "sh")
    body = _group(r"<<EOF\n(.*?)\nEOF", script)
    now = time.time_ns()
    decoded = decode_logs_json(body.replace("$now", str(now)).encode())
    assert not decoded.rejected
    first, second = decoded.records
    assert validate(first, now_ns=now) == []
    violations = validate(second, now_ns=now)
    assert violations
    (answer,) = _code_blocks(section, "json")
    shown = json.loads(answer)["partialSuccess"]
    assert shown["rejectedLogRecords"] == 1
    # The receiver's message: "<n> of <total> records rejected: record <i>: <first two>".
    assert shown["errorMessage"] == (
        f"1 of 2 records rejected: record 1: {summarize(violations, limit=2)}"
    )
