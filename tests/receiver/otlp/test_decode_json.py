"""OTLP/JSON decoding (the OTLP spec's JSON, not protobuf's JSON mapping)."""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson
import pytest

from receiver.errors import InvalidRequest
from receiver.otlp.decode import MAX_ANY_DEPTH, decode_logs_json
from receiver.otlp.decode_traces import decode_traces_json

TRACE = "5B8EFFF798038103D269B633813FC60C"
SPAN = "EEE19B7EC3C1B174"


def _request(record: dict[str, Any], **extra: Any) -> bytes:
    """One record in the layout of opentelemetry-proto's examples/logs.json."""
    doc = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "billing"}}],
                    "futureResourceField": {"x": 1},
                },
                "scopeLogs": [
                    {
                        "scope": {"name": "my.library", "version": "1.0.0", "newThing": []},
                        "logRecords": [record],
                        "schemaUrl": "https://example.com",
                        "unknownScopeLogsField": 7,
                    }
                ],
                "unknownResourceLogsField": "ignored",
            }
        ],
        **extra,
    }
    return orjson.dumps(doc)


def _record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "timeUnixNano": "1544712660300000000",
        "observedTimeUnixNano": 1544712660300000000,
        "severityNumber": 10,
        "severityText": "Information",
        "traceId": TRACE,
        "spanId": SPAN,
        "body": {"stringValue": "Example log record"},
        "attributes": [
            {"key": "string.attribute", "value": {"stringValue": "some string"}},
            {"key": "boolean.attribute", "value": {"boolValue": True}},
            {"key": "int.attribute", "value": {"intValue": "10"}},
            {"key": "double.attribute", "value": {"doubleValue": 637.704}},
            {
                "key": "array.attribute",
                "value": {
                    "arrayValue": {"values": [{"stringValue": "many"}, {"stringValue": "values"}]}
                },
            },
            {
                "key": "map.attribute",
                "value": {
                    "kvlistValue": {
                        "values": [{"key": "some.map.key", "value": {"stringValue": "some value"}}]
                    }
                },
            },
        ],
    }
    base.update(fields)
    return base


def test_spec_example_decodes() -> None:
    decoded = decode_logs_json(_request(_record()))
    (record,) = decoded.records
    assert record.time_unix_nano == 1544712660300000000
    assert record.observed_time_unix_nano == 1544712660300000000
    assert record.severity_number == 10 and record.severity_text == "Information"
    assert record.body == "Example log record"
    assert record.resource == {"service.name": "billing"}
    assert (record.scope_name, record.scope_version) == ("my.library", "1.0.0")
    assert record.attributes == {
        "string.attribute": "some string",
        "boolean.attribute": True,
        "int.attribute": 10,
        "double.attribute": 637.704,
        "array.attribute": ["many", "values"],
        "map.attribute": {"some.map.key": "some value"},
    }


@pytest.mark.parametrize("trace", [TRACE, TRACE.lower(), "5b8EFFf798038103d269B633813fc60c"])
def test_hex_ids_are_case_insensitive_and_stored_lowercase(trace: str) -> None:
    (record,) = decode_logs_json(_request(_record(traceId=trace, spanId=SPAN))).records
    assert record.trace_id == TRACE.lower()
    assert record.span_id == SPAN.lower()


def test_missing_empty_and_zero_ids_mean_no_trace_context() -> None:
    record = _record(traceId="", spanId="0000000000000000")
    del record["traceId"]
    (decoded,) = decode_logs_json(_request(record)).records
    assert decoded.trace_id == "" and decoded.span_id == ""


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("traceId", "abcd", "traceId must be 16 bytes, got 2"),
        ("traceId", "zz" * 16, "traceId is not hex"),
        ("spanId", "EEE19B7EC3C1B17400", "spanId must be 8 bytes, got 9"),
        # protobuf's JSON mapping would send base64: that is not OTLP/JSON
        ("traceId", base64.b64encode(bytes.fromhex(TRACE)).decode(), "traceId is not hex"),
    ],
)
def test_bad_ids_reject_the_record_not_the_request(field: str, value: str, reason: str) -> None:
    doc = orjson.loads(_request(_record()))
    records = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    records.append(_record(**{field: value}))
    decoded = decode_logs_json(orjson.dumps(doc))
    assert len(decoded.records) == 1 and len(decoded.rejected) == 1
    assert decoded.reasons == [reason]


@pytest.mark.parametrize(
    ("json_value", "expected"),
    [
        ({"intValue": 42}, 42),
        ({"intValue": "42"}, 42),
        ({"intValue": "-9223372036854775808"}, -(2**63)),
        ({"intValue": 9223372036854775807}, 2**63 - 1),
        ({"doubleValue": 1}, 1.0),
        ({"doubleValue": "2.5"}, 2.5),
        ({"doubleValue": "Infinity"}, math.inf),
        ({"boolValue": False}, False),
        ({"bytesValue": base64.b64encode(b"\x00\xfe\xff").decode()}, b"\x00\xfe\xff"),
        ({"bytesValue": base64.urlsafe_b64encode(b"\xfb\xff").decode().rstrip("=")}, b"\xfb\xff"),
        ({}, None),
        ({"someFutureValue": 1}, None),
        ({"arrayValue": {}}, []),
        ({"kvlistValue": {"values": []}}, {}),
        ({"stringValue": "x", "unknown": 1}, "x"),
    ],
)
def test_anyvalue_forms(json_value: dict[str, Any], expected: Any) -> None:
    record = _record(attributes=[{"key": "k", "value": json_value}])
    (decoded,) = decode_logs_json(_request(record)).records
    assert decoded.attributes["k"] == expected
    assert type(decoded.attributes["k"]) is type(expected)


def test_numbers_as_strings_or_numbers_everywhere() -> None:
    record = _record(
        timeUnixNano=1544712660300000000,
        observedTimeUnixNano="1544712660300000001",
        severityNumber=17,
        flags="1",
        droppedAttributesCount=2,
    )
    (decoded,) = decode_logs_json(_request(record)).records
    assert decoded.time_unix_nano == 1544712660300000000
    assert decoded.observed_time_unix_nano == 1544712660300000001
    assert decoded.severity_number == 17 and decoded.flags == 1
    assert decoded.dropped_attributes_count == 2


def test_unknown_fields_are_ignored_at_every_level() -> None:
    record = _record(futureRecordField={"a": [1, 2]}, eventName="login")
    record["attributes"][0]["futureKvField"] = True
    body = _request(record, futureTopLevel="x")
    (decoded,) = decode_logs_json(body).records
    assert decoded.event_name == "login"
    assert decoded.attributes["string.attribute"] == "some string"


def test_empty_documents_decode_to_nothing() -> None:
    assert decode_logs_json(b"{}").total == 0
    assert decode_logs_json(b'{"resourceLogs": []}').total == 0
    assert decode_logs_json(b'{"resourceLogs": [{"scopeLogs": [{}]}]}').total == 0


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"not json", "not JSON"),
        (b"[]", "request: expected an object"),
        (b'{"resourceLogs": {}}', "resourceLogs: expected an array"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [1]}]}]}', "logRecords[0]"),
        (_request(_record(timeUnixNano="soon")), "timeUnixNano"),
        (_request(_record(timeUnixNano=-1)), "out of range"),
        (_request(_record(severityNumber=True)), "severityNumber"),
        (_request(_record(traceId=12)), "traceId: expected a hex string"),
        (_request(_record(attributes=[{"key": 1, "value": {}}])), "key"),
        (_request(_record(attributes=[{"key": "k", "value": {"intValue": 1.5}}])), "intValue"),
        (_request(_record(attributes=[{"key": "k", "value": {"boolValue": "yes"}}])), "boolValue"),
        (_request(_record(attributes=[{"key": "k", "value": {"bytesValue": "!!"}}])), "base64"),
        (_request(_record(body={"stringValue": 3})), "body.stringValue"),
    ],
)
def test_malformed_documents_are_invalid_naming_the_place(body: bytes, where: str) -> None:
    with pytest.raises(InvalidRequest, match=None) as info:
        decode_logs_json(body)
    assert where in str(info.value)


def _nested_json(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(depth):
        value = {"arrayValue": {"values": [value]}}
    return value


def test_nesting_is_bounded() -> None:
    ok = _record(attributes=[{"key": "k", "value": _nested_json(MAX_ANY_DEPTH)}])
    assert decode_logs_json(_request(ok)).records
    deep = _record(attributes=[{"key": "k", "value": _nested_json(MAX_ANY_DEPTH + 1)}])
    with pytest.raises(InvalidRequest, match="nested deeper"):
        decode_logs_json(_request(deep))


def test_json_beyond_the_parsers_own_depth_is_invalid() -> None:
    body = b'{"resourceLogs":' + b"[" * 2000 + b"]" * 2000 + b"}"
    with pytest.raises(InvalidRequest):
        decode_logs_json(body)


def test_traces_json() -> None:
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "a"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "t"},
                        "spans": [
                            {
                                "traceId": TRACE,
                                "spanId": SPAN,
                                "parentSpanId": "",
                                "name": "GET /x",
                                "kind": 2,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": 1544712661000000000,
                                "status": {"code": 2, "message": "bad"},
                                "attributes": [{"key": "n", "value": {"intValue": "3"}}],
                                "events": [{"name": "ignored"}],
                            },
                            {"traceId": TRACE, "name": "no span id"},
                        ],
                    }
                ],
            }
        ]
    }
    decoded = decode_traces_json(orjson.dumps(doc))
    (span,) = decoded.spans
    assert span.trace_id == TRACE.lower() and span.span_id == SPAN.lower()
    assert span.parent_span_id == "" and span.kind == 2 and span.status_code == 2
    assert span.end_time_unix_nano - span.start_time_unix_nano == 10**9
    assert span.attributes == {"n": 3} and span.resource == {"service.name": "a"}
    assert decoded.reasons == ["spanId is required"]
