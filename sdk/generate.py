"""Generate the Node.js and Go helpers' schema modules from the one audit schema.

The helpers in other languages validate, name their parameters and fill their records from
what this writes: the schema's fields, limits, enums, patterns and message templates, and
the few character classes the Python validator defines (control characters, bad attribute
keys, what ``str.isspace`` and ``str.isprintable`` call blank and printable). Nothing of
that is typed by hand a second time; each helper's own code only interprets it.

    python sdk/generate.py          # write the generated files
    python sdk/generate.py --check  # exit 1 when a committed file differs (make lint, tests)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from otel_audit import validate as _validate  # noqa: E402
from otel_audit.schema import SCHEMA_FILE, Schema, load_schema  # noqa: E402

NODE_DATA = ROOT / "sdk" / "node" / "src" / "schema.generated.js"
NODE_TYPES = ROOT / "sdk" / "node" / "src" / "schema.generated.d.ts"
GO_DATA = ROOT / "sdk" / "go" / "schema_gen.go"
HEADER = f"Generated from otel_audit/schema/{SCHEMA_FILE} by sdk/generate.py. Do not edit."


def camel(param: str) -> str:
    head, *rest = param.split("_")
    return head + "".join(p.capitalize() for p in rest)


def go_name(param: str) -> str:
    words = {"id": "ID", "ip": "IP"}
    return "".join(words.get(p, p.capitalize()) for p in param.split("_"))


def _ranges(predicate: Any) -> list[list[int]]:
    out: list[list[int]] = []
    for code in range(0x110000):
        if predicate(chr(code)):
            if out and out[-1][1] == code - 1:
                out[-1][1] = code
            else:
                out.append([code, code])
    return out


def schema_data(schema: Schema) -> dict[str, Any]:
    """Everything the helpers read, in one JSON-able object."""
    limits = schema.limits
    return {
        "name": schema.name,
        "version": schema.version,
        "marker": schema.marker_attribute,
        "limits": {
            "maxAttributes": limits.max_attributes,
            "maxResourceAttributes": limits.max_resource_attributes,
            "maxAttributeKeyBytes": limits.max_attribute_key_bytes,
            "maxValueDepth": limits.max_value_depth,
            "maxArrayItems": limits.max_array_items,
            "maxFutureS": limits.max_future_s,
            "minTimeUnixNano": str(limits.min_time_unix_nano),
            "minDate": schema.raw["limits"]["min_time"][:10],
        },
        "fields": [
            {
                "attribute": f.attribute,
                "param": camel(f.param),
                "goName": go_name(f.param),
                "type": f.type,
                "required": f.required,
                "oversize": f.oversize,
                "maxBytes": f.max_bytes,
                "enum": list(f.enum),
                "pattern": f.pattern.pattern if f.pattern is not None else "",
                "array": f.array,
                "aliases": list(f.aliases),
                "aliasDefault": list(f.alias_default) if f.alias_default else [],
                "description": f.description,
            }
            for f in schema.fields
        ],
        "resourceFields": [
            {"attribute": rf.attribute, "required": rf.required, "maxBytes": rf.max_bytes}
            for rf in schema.resource_fields
        ],
        "resourceRequiredCategories": sorted(schema.resource_required_categories),
        "resourceCategoryAttributes": list(schema.resource_category_attributes),
        "categoryAttribute": schema.attribute_of("category"),
        "outcomeAttribute": schema.attribute_of("outcome"),
        "actionAttribute": schema.attribute_of("action"),
        "eventIdAttribute": schema.attribute_of("event_id"),
        "actorIdAttribute": schema.attribute_of("actor_id"),
        "severity": dict(schema.severity),
        "messages": dict(schema.messages),
        "valueTypeNames": dict(schema.value_type_names),
        "controlPattern": _validate._CONTROL.pattern,
        "keyBadPattern": _validate._KEY_BAD.pattern,
        "blankChars": [ord(c) for c in map(chr, range(0x110000)) if c.isspace()],
        "nonPrintable": _ranges(lambda c: not c.isprintable()),
    }


def render_node(data: dict[str, Any]) -> str:
    body = json.dumps(data, indent=1, ensure_ascii=True)
    return f"'use strict';\n// {HEADER}\n\nmodule.exports = Object.freeze({body});\n"


def _ts_string_union(values: list[str]) -> str:
    return " | ".join(json.dumps(v) for v in values) or "string"


def render_node_types(schema: Schema, data: dict[str, Any]) -> str:
    lines = [f"// {HEADER}", ""]
    by_attribute = {f["attribute"]: f for f in data["fields"]}
    named = {
        "audit.category": "Category",
        "audit.outcome": "Outcome",
        "audit.actor.type": "ActorType",
    }
    for attribute, name in named.items():
        lines.append(f"/** {by_attribute[attribute]['description']} */")
        lines.append(f"export type {name} = {_ts_string_union(by_attribute[attribute]['enum'])};")
    lines.append("")
    lines.append("/** The schema's parameters of one audit event (wire attributes in the docs). */")
    lines.append("export interface AuditFields {")
    for f in data["fields"]:
        required = f["required"] == "always"
        kind = named.get(f["attribute"], "string[]" if f["array"] else "string")
        lines.append(f"  /** `{f['attribute']}`: {f['description']} */")
        lines.append(f"  {f['param']}{'' if required else '?'}: {kind};")
    lines.append("}")
    lines.append("")
    lines.append("/** The wire attribute of each parameter. */")
    lines.append("export declare const PARAM_ATTRIBUTES: {")
    for f in data["fields"]:
        lines.append(f"  readonly {f['param']}: {json.dumps(f['attribute'])};")
    lines.append("};")
    return "\n".join(lines) + "\n"


def _go_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=True)


def render_go(data: dict[str, Any]) -> str:
    fields = data["fields"]
    lines = [
        f"// Code generated by sdk/generate.py from otel_audit/schema/{SCHEMA_FILE}. DO NOT EDIT.",
        "",
        "package otelaudit",
        "",
        'import "go.opentelemetry.io/otel/attribute"',
        "",
        "// Fields are the schema's parameters of one audit event; Emit sets each one that is",
        "// not empty as its wire attribute (see docs/schema.md).",
        "type Fields struct {",
    ]
    for f in fields:
        kind = "[]string" if f["array"] else "string"
        lines.append(f"\t// {f['goName']} is {f['attribute']}: {f['description']}")
        lines.append(f"\t{f['goName']} {kind}")
    lines += [
        "}",
        "",
        "// attributes appends the wire attributes of the fields that are set.",
        "func (f *Fields) attributes(out []attribute.KeyValue) []attribute.KeyValue {",
    ]
    for f in fields:
        name, attribute = f["goName"], _go_string(f["attribute"])
        if f["array"]:
            lines += [
                f"\tif f.{name} != nil {{",
                f"\t\tout = append(out, attribute.StringSlice({attribute}, f.{name}))",
                "\t}",
            ]
        else:
            lines += [
                f'\tif f.{name} != "" {{',
                f"\t\tout = append(out, attribute.String({attribute}, f.{name}))",
                "\t}",
            ]
    lines += ["\treturn out", "}", ""]
    for attribute, name in (
        ("audit.category", "Category"),
        ("audit.outcome", "Outcome"),
        ("audit.actor.type", "ActorType"),
    ):
        values = next(f["enum"] for f in fields if f["attribute"] == attribute)
        lines.append(f"// The values of {attribute}.")
        lines.append("const (")
        for v in values:
            const = name + "".join(p.capitalize() for p in v.split("_"))
            lines.append(f"\t{const} = {_go_string(v)}")
        lines.append(")")
        lines.append("")
    lines.append("// schemaJSON is the schema data the validator interprets.")
    lines.append("const schemaJSON = " + _go_string(json.dumps(data, separators=(",", ":"))))
    return _gofmt("\n".join(lines) + "\n")


def _gofmt(source: str) -> str:
    """``source`` as gofmt writes it (the Go toolchain builds the module anyway)."""
    gofmt = shutil.which("gofmt") or "/usr/local/go/bin/gofmt"
    try:
        done = subprocess.run([gofmt], input=source, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"sdk/generate.py: gofmt is needed for the Go helper: {exc}") from exc
    return done.stdout


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    schema = load_schema()
    data = schema_data(schema)
    return {
        NODE_DATA: render_node(data),
        NODE_TYPES: render_node_types(schema, data),
        GO_DATA: render_go(data),
    }


def stale() -> list[Path]:
    """The generated files whose committed content differs from what the schema gives."""
    return [
        path
        for path, text in outputs().items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        old = stale()
        for path in old:
            print(f"stale: {path.relative_to(ROOT)} (run: python sdk/generate.py)", file=sys.stderr)
        return 1 if old else 0
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
