"""Property tests: the validator never raises, and valid records always make storable documents."""

from __future__ import annotations

import math
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from otel_audit.document import build_document
from otel_audit.record import LogRecordData
from otel_audit.schema import load_schema
from otel_audit.validate import Violation, validate

SCHEMA = load_schema()
NOW = 1_767_225_600_000_000_000


class Opaque:
    """A value no OTLP decoder produces, to prove odd objects are reported, not fatal."""

    def __repr__(self) -> str:
        raise RuntimeError("repr is hostile too")


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**256), max_value=2**256),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=8),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2),
    st.binary(max_size=40),
    st.builds(Opaque),
    st.sampled_from([float("nan"), math.inf, 2**64, -(2**63) - 1, "", " ", "\x00", "a..b"]),
)
keys = st.one_of(
    st.text(max_size=20),
    st.sampled_from([f.attribute for f in SCHEMA.fields] + ["", ".", "a..b", "x" * 300]),
    st.integers(),
    st.none(),
    st.tuples(st.integers()),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=5),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=25,
)

# Values drawn from each schema field's own vocabulary, so many records get far into the
# rules (and a good share are valid) instead of failing at the first required field.
good_field_values = {
    f.attribute: st.one_of(
        st.sampled_from(f.enum) if f.enum else st.just(f.example or "x"),
        st.just(f.example or "x"),
        values,
    )
    for f in SCHEMA.fields
}


@st.composite
def audit_attributes(draw: st.DrawFn) -> Any:
    attrs: dict[Any, Any] = {}
    for f in SCHEMA.fields:
        if f.required == "optional" and draw(st.booleans()):
            continue
        if draw(st.integers(0, 9)) == 0:
            continue
        attrs[f.attribute] = draw(good_field_values[f.attribute])
    attrs.update(draw(st.dictionaries(keys, values, max_size=6)))
    if draw(st.integers(0, 19)) == 0:
        return draw(values)  # attributes that are not even a mapping
    return attrs


resources = st.one_of(
    st.fixed_dictionaries(
        {"service.name": st.one_of(st.just("billing"), scalars)},
        optional={
            "service.version": scalars,
            "deployment.environment": scalars,
            "host.name": st.text(max_size=10),
        },
    ).flatmap(
        lambda base: st.dictionaries(keys, values, max_size=4).map(lambda extra: {**extra, **base})
    ),
    st.dictionaries(keys, values, max_size=4),
    values,
)
times = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=NOW - 10**18, max_value=NOW + 10**15),
    st.just(0),
    st.floats(),
    st.none(),
)
hex_ids = st.one_of(st.just(""), st.text("0123456789abcdef", min_size=16, max_size=32))
plain_text = st.text(st.characters(codec="utf-8"), max_size=30)

hostile_records = st.builds(
    LogRecordData,
    attributes=audit_attributes(),
    resource=resources,
    time_unix_nano=times,
    observed_time_unix_nano=times,
    severity_number=st.integers(0, 24),
    severity_text=plain_text,
    body=st.one_of(st.none(), plain_text, values),
    trace_id=hex_ids,
    span_id=hex_ids,
    flags=st.integers(0, 2**32 - 1),
    event_name=plain_text,
    scope_name=plain_text,
    scope_version=plain_text,
)


clean_keys = st.from_regex(r"[a-z_]{1,8}(\.[a-z0-9_]{1,8}){0,2}", fullmatch=True)
clean_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(st.characters(codec="utf-8"), max_size=40),
        st.binary(max_size=20),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(clean_keys, children, max_size=4)
    ),
    max_leaves=20,
)
identifier_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc",)), min_size=1, max_size=300
).filter(lambda t: not t.isspace())


@st.composite
def mostly_valid_records(draw: st.DrawFn) -> LogRecordData:
    """A valid core with arbitrary extras, body, optional fields and resource extras."""
    attrs: dict[str, Any] = {}
    for f in SCHEMA.fields:
        if f.required == "optional" and draw(st.booleans()):
            continue
        if f.enum:
            attrs[f.attribute] = draw(st.sampled_from(f.enum))
        elif f.attribute == "audit.action" or f.attribute == "audit.event.id":
            attrs[f.attribute] = f.example
        else:
            attrs[f.attribute] = draw(identifier_text)
    extras = draw(st.dictionaries(clean_keys, st.one_of(clean_values, values), max_size=6))
    resource = {
        "service.name": "billing",
        **draw(st.dictionaries(clean_keys, clean_values, max_size=4)),
    }
    ts = draw(st.integers(min_value=SCHEMA.limits.min_time_unix_nano, max_value=NOW))
    return LogRecordData(
        attributes={**extras, **attrs},
        resource=resource,
        time_unix_nano=ts,
        observed_time_unix_nano=draw(st.one_of(st.just(0), st.just(ts))),
        severity_number=9,
        severity_text=draw(plain_text),
        body=draw(st.one_of(st.none(), plain_text, clean_values)),
        trace_id=draw(hex_ids),
        span_id=draw(hex_ids),
        flags=draw(st.integers(0, 255)),
        event_name=draw(plain_text),
        scope_name=draw(plain_text),
        scope_version=draw(plain_text),
    )


records = st.one_of(hostile_records, mostly_valid_records())


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records)
def test_validate_never_raises_and_valid_records_store(record: LogRecordData) -> None:
    violations = validate(record, now_ns=NOW)
    assert isinstance(violations, list)
    for v in violations:
        assert isinstance(v, Violation)
        assert isinstance(v.field, str) and isinstance(v.rule, str) and isinstance(v.message, str)
    event("valid" if not violations else "invalid")
    if violations:
        return
    doc = build_document(record, received_ns=NOW)
    data = orjson.dumps(doc)
    assert orjson.loads(data)["event"]["action"] == record.attributes["audit.action"]


@settings(max_examples=150, deadline=None)
@given(
    extras=st.dictionaries(st.text(min_size=1, max_size=12), values, max_size=8),
    body=st.one_of(st.none(), plain_text, values),
)
def test_valid_core_with_arbitrary_extras(extras: dict[str, Any], body: Any) -> None:
    """A valid core with random extras: whenever validation passes, the document stores."""
    attrs = {
        f.attribute: (f.enum[0] if f.enum else f.example)
        for f in SCHEMA.fields
        if f.required != "optional"
    }
    attrs["audit.category"] = "data_change"
    record = LogRecordData(
        attributes={**extras, **attrs},
        resource={"service.name": "billing"},
        time_unix_nano=NOW,
        body=body,
    )
    violations = validate(record, now_ns=NOW)
    event("valid" if not violations else "invalid")
    if violations:
        return
    doc = build_document(record, received_ns=NOW)
    stored = orjson.loads(orjson.dumps(doc))
    assert set(stored["audit"].get("extra", {})) == set(extras)
