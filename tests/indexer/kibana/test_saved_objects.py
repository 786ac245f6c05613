"""The Kibana saved objects: well-formed, self-consistent, and using only fields we map.

Fields are checked against the index templates the project installs
(``indexer.templates.registered_templates()``), per data view: a data view must be
covered by a registered template, and every field an object uses through it (columns,
sort, KQL, Lens columns, field formatters, runtime-field scripts) must be mapped there.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from indexer.kibana import objects as kibana_objects
from indexer.templates import registered_templates
from otel_audit.schema import load_schema

REPO = Path(__file__).resolve().parents[3]
NDJSON = REPO / "kibana" / "otel-audit.ndjson"
KNOWN_TYPES = {"index-pattern", "search", "dashboard", "visualization", "lens"}
# Field types Lens can bucket on (terms, date_histogram).
BUCKETABLE = {"keyword", "date", "date_nanos", "ip", "long", "integer", "short", "boolean"}
JSON_STRING_ATTRIBUTES = ("fieldFormatMap", "runtimeFieldMap", "panelsJSON", "optionsJSON")


# ---- reading the file ----------------------------------------------------------------------


def _objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in NDJSON.read_text(encoding="utf-8").splitlines()]


def _by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["type"], o["id"]): o for o in objects}


def _search_source(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["attributes"].get("kibanaSavedObjectMeta") or {}
    return json.loads(meta.get("searchSourceJSON") or "{}")


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(dashboard["attributes"]["panelsJSON"])


# ---- a small Rison reader, enough to check the link templates -----------------------------


class _Rison:
    _ID = re.compile(r"[^ '!:(),*@$]+")

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def parse(self) -> Any:
        value = self._value()
        assert self.pos == len(self.text), f"trailing Rison: {self.text[self.pos :]!r}"
        return value

    def _value(self) -> Any:
        c = self.text[self.pos]
        if c == "(":
            self.pos += 1
            out: dict[str, Any] = {}
            while self.text[self.pos] != ")":
                key = self._value()
                assert self.text[self.pos] == ":", f"':' expected at {self.pos}"
                self.pos += 1
                out[key] = self._value()
                if self.text[self.pos] == ",":
                    self.pos += 1
            self.pos += 1
            return out
        if c == "'":
            self.pos += 1
            chars = []
            while (c := self.text[self.pos]) != "'":
                if c == "!":
                    self.pos += 1
                    assert self.text[self.pos] in "!'", "bad Rison escape"
                    c = self.text[self.pos]
                chars.append(c)
                self.pos += 1
            self.pos += 1
            return "".join(chars)
        match = self._ID.match(self.text, self.pos)
        assert match, f"Rison value expected at {self.pos}: {self.text[self.pos :]!r}"
        self.pos = match.end()
        return match.group(0)


# ---- the templates' fields ---------------------------------------------------------------


def _walk(props: dict[str, Any], prefix: str, out: dict[str, str]) -> None:
    for name, spec in props.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            _walk(spec["properties"], path + ".", out)
            continue
        out[path] = spec.get("type", "object")
        for sub, sub_spec in (spec.get("fields") or {}).items():
            out[f"{path}.{sub}"] = sub_spec["type"]


def _template_for(title: str) -> tuple[str, dict[str, str]]:
    """The template Elasticsearch would apply to an index of this data view."""
    sample = title.replace("*", "2026.01.01")
    matching = [
        (body.get("priority", 0), name, body)
        for name, body in registered_templates().items()
        if any(fnmatch.fnmatchcase(sample, p) for p in body["index_patterns"])
    ]
    assert matching, (
        f"no registered index template covers data view {title!r} "
        f"(registered: {sorted(registered_templates())})"
    )
    _, name, body = max(matching, key=lambda m: m[0])
    fields: dict[str, str] = {}
    _walk(body["template"]["mappings"]["properties"], "", fields)
    return name, fields


def _mapped(field: str, fields: dict[str, str]) -> bool:
    if field in fields:
        return True
    # A key inside a flattened field is searchable as parent.key.
    return any(
        kind == "flattened" and field.startswith(parent + ".") for parent, kind in fields.items()
    )


_KQL_FIELD = re.compile(r"([A-Za-z_@][\w.@]*)\s*:")


def _kql_fields(query: str) -> list[str]:
    return _KQL_FIELD.findall(query)


def _uses(objects: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """Data view id -> [(field, where it is used)] for every object in the file."""
    views = {o["id"]: o for o in objects if o["type"] == "index-pattern"}
    uses: dict[str, list[tuple[str, str]]] = {v: [] for v in views}

    def view_of_ref(obj: dict[str, Any], ref_name: str) -> str:
        for ref in obj["references"]:
            if ref["name"] == ref_name:
                return str(ref["id"])
        raise AssertionError(f"{obj['id']}: no reference named {ref_name!r}")

    for view_id, view in views.items():
        attrs = view["attributes"]
        uses[view_id].append((attrs["timeFieldName"], "timeFieldName"))
        runtime = json.loads(attrs["runtimeFieldMap"])
        for name in json.loads(attrs["fieldFormatMap"]):
            if name not in runtime:
                uses[view_id].append((name, "fieldFormatMap"))
        for name, spec in runtime.items():
            for used in re.findall(r"doc\['([^']+)'\]", spec["script"]["source"]):
                uses[view_id].append((used, f"runtime field {name}"))

    for obj in objects:
        if obj["type"] == "search":
            source = _search_source(obj)
            view_id = view_of_ref(obj, source["indexRefName"])
            where = f"search {obj['id']}"
            uses[view_id] += [(c, f"{where} columns") for c in obj["attributes"]["columns"]]
            uses[view_id] += [(s[0], f"{where} sort") for s in obj["attributes"]["sort"]]
            uses[view_id] += [(f, f"{where} query") for f in _kql_fields(source["query"]["query"])]
        if obj["type"] == "dashboard":
            for panel in _panels(obj):
                lens = panel["embeddableConfig"].get("attributes")
                if panel["type"] != "lens" or not lens:
                    continue
                refs = {r["name"]: r["id"] for r in lens["references"]}
                layers = lens["state"]["datasourceStates"]["formBased"]["layers"]
                for layer_id, layer in layers.items():
                    view_id = refs[f"indexpattern-datasource-layer-{layer_id}"]
                    where = f"dashboard panel {lens['title']!r}"
                    for column in layer["columns"].values():
                        if column.get("sourceField", "___records___") != "___records___":
                            uses[view_id].append((column["sourceField"], where))
                        if "filter" in column:
                            kql = column["filter"]["query"]
                            uses[view_id] += [(f, f"{where} filter") for f in _kql_fields(kql)]
    return uses


# ---- tests ---------------------------------------------------------------------------------


def test_file_is_the_rendered_objects() -> None:
    assert NDJSON.read_text(encoding="utf-8") == kibana_objects.render_ndjson(), (
        "kibana/otel-audit.ndjson is stale: run "
        "'otel-audit kibana render -o kibana/otel-audit.ndjson'"
    )


def test_every_line_is_a_saved_object() -> None:
    text = NDJSON.read_text(encoding="utf-8")
    assert text.endswith("\n")
    keys = set()
    for number, line in enumerate(text.splitlines(), start=1):
        obj = json.loads(line)
        assert isinstance(obj, dict), number
        assert {"type", "id", "attributes", "references"} <= obj.keys(), number
        assert obj["type"] in KNOWN_TYPES, (number, obj["type"])
        assert isinstance(obj["id"], str) and obj["id"], number
        assert obj["attributes"].get("title"), f"line {number} has no title"
        for ref in obj["references"]:
            assert {"name", "type", "id"} <= ref.keys(), (number, ref)
        for attr in JSON_STRING_ATTRIBUTES:
            if attr in obj["attributes"]:
                assert isinstance(obj["attributes"][attr], str), (number, attr)
                json.loads(obj["attributes"][attr])
        if "kibanaSavedObjectMeta" in obj["attributes"]:
            _search_source(obj)
        keys.add((obj["type"], obj["id"]))
    assert len(keys) == len(text.splitlines()), "duplicate type/id"


def test_expected_objects_are_present() -> None:
    objects = _objects()
    views = {o["attributes"]["title"]: o for o in objects if o["type"] == "index-pattern"}
    assert set(views) == {"audit-events-*", "audit-rejected-*", "audit-spans-*"}
    for view in views.values():
        assert view["attributes"]["timeFieldName"] == "@timestamp"
    searches = {o["id"] for o in objects if o["type"] == "search"}
    assert {
        kibana_objects.SEARCH_FAILED_DENIED_ID,
        kibana_objects.SEARCH_PERMISSION_CHANGES_ID,
        kibana_objects.SEARCH_AUTH_FAILURES_ID,
    } <= searches
    assert [o["id"] for o in objects if o["type"] == "dashboard"] == [kibana_objects.DASHBOARD_ID]


def test_every_reference_resolves() -> None:
    objects = _objects()
    present = set(_by_key(objects))
    for obj in objects:
        names = [r["name"] for r in obj["references"]]
        assert len(names) == len(set(names)), f"{obj['id']}: duplicate reference names"
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in present, f"{obj['id']}: {ref} is not in the file"
        source = _search_source(obj)
        if "indexRefName" in source:
            assert source["indexRefName"] in names, obj["id"]
        if obj["type"] == "search":
            assert source.get("indexRefName") == "kibanaSavedObjectMeta.searchSourceJSON.index"


def test_dashboard_panels_resolve() -> None:
    objects = _objects()
    present = set(_by_key(objects))
    (dashboard,) = [o for o in objects if o["type"] == "dashboard"]
    refs = {r["name"]: r for r in dashboard["references"]}
    used_refs = set()
    cells: set[tuple[int, int]] = set()
    for panel in _panels(dashboard):
        index = panel["panelIndex"]
        grid = panel["gridData"]
        assert grid["i"] == index
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 48, panel.get("title")
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"panel {panel.get('title')!r} overlaps another"
        cells |= area
        if "panelRefName" in panel:
            name = f"{index}:{panel['panelRefName']}"
            assert name in refs, name
            assert refs[name]["type"] == panel["type"]
            used_refs.add(name)
            continue
        assert panel["type"] == "lens"
        lens = panel["embeddableConfig"]["attributes"]
        layers = lens["state"]["datasourceStates"]["formBased"]["layers"]
        inner = {r["name"]: r for r in lens["references"]}
        for layer_id, layer in layers.items():
            ref_name = f"indexpattern-datasource-layer-{layer_id}"
            assert ref_name in inner, ref_name
            outer = refs[f"{index}:{ref_name}"]
            assert (outer["type"], outer["id"]) == (inner[ref_name]["type"], inner[ref_name]["id"])
            assert (outer["type"], outer["id"]) in present
            used_refs.add(f"{index}:{ref_name}")
            columns = layer["columns"]
            assert set(layer["columnOrder"]) == set(columns)
            for column in columns.values():
                order = column.get("params", {}).get("orderBy", {})
                if order.get("type") == "column":
                    assert order["columnId"] in columns
        viz = lens["state"]["visualization"]
        if lens["visualizationType"] == "lnsXY":
            for layer in viz["layers"]:
                columns = layers[layer["layerId"]]["columns"]
                for accessor in [
                    layer["xAccessor"],
                    layer.get("splitAccessor"),
                    *layer["accessors"],
                ]:
                    if accessor is not None:
                        assert accessor in columns
        elif lens["visualizationType"] == "lnsDatatable":
            columns = layers[viz["layerId"]]["columns"]
            assert [c["columnId"] for c in viz["columns"]] == layers[viz["layerId"]]["columnOrder"]
            assert all(c["columnId"] in columns for c in viz["columns"])
        else:
            pytest.fail(f"unchecked Lens type {lens['visualizationType']}")
    assert used_refs == set(refs), f"unused references: {set(refs) - used_refs}"
    recent = [p for p in _panels(dashboard) if p["type"] == "search"]
    assert [refs[f"{p['panelIndex']}:{p['panelRefName']}"]["id"] for p in recent] == [
        kibana_objects.SEARCH_FAILED_DENIED_ID
    ]


@pytest.mark.parametrize("view", kibana_objects.data_views(), ids=lambda v: v.title)
def test_data_view_fields_exist_in_its_template(view: kibana_objects.DataView) -> None:
    objects = _objects()
    _, fields = _template_for(view.title)
    runtime = json.loads(
        _by_key(objects)[("index-pattern", view.id)]["attributes"]["runtimeFieldMap"]
    )
    uses = _uses(objects)[view.id]
    assert uses, view.id
    missing = [(f, where) for f, where in uses if f not in runtime and not _mapped(f, fields)]
    assert not missing, f"fields not mapped for {view.title}: {missing}"
    assert fields[view.time_field] in ("date", "date_nanos")


def test_bucketed_fields_are_aggregatable() -> None:
    objects = _objects()
    (dashboard,) = [o for o in objects if o["type"] == "dashboard"]
    _, fields = _template_for("audit-events-*")
    checked = 0
    for panel in _panels(dashboard):
        lens = panel["embeddableConfig"].get("attributes")
        if not lens:
            continue
        for layer in lens["state"]["datasourceStates"]["formBased"]["layers"].values():
            for column in layer["columns"].values():
                if column["isBucketed"]:
                    kind = fields[column["sourceField"]]
                    assert kind in BUCKETABLE, (column["sourceField"], kind)
                    checked += 1
    assert checked >= 6


def test_queries_use_schema_enum_values() -> None:
    schema = load_schema()
    enums = {f.stored: set(f.enum) for f in schema.fields if f.enum}
    queries = []
    for obj in _objects():
        if obj["type"] == "search":
            queries.append(_search_source(obj)["query"]["query"])
        if obj["type"] == "dashboard":
            for panel in _panels(obj):
                lens = panel["embeddableConfig"].get("attributes") or {}
                for layer in (
                    lens.get("state", {})
                    .get("datasourceStates", {})
                    .get("formBased", {})
                    .get("layers", {})
                    .values()
                ):
                    queries += [
                        c["filter"]["query"] for c in layer["columns"].values() if "filter" in c
                    ]
    checked = 0
    for query in queries:
        for field, values in re.findall(r"([\w.]+):(\([^)]*\)|\w+)", query):
            if field in enums:
                for value in re.split(r"\s+or\s+", values.strip("()").strip()):
                    assert value in enums[field], (query, value)
                    checked += 1
    assert checked >= 6


def test_trace_id_links_to_the_trace_audit_events_in_discover() -> None:
    events = _by_key(_objects())[("index-pattern", kibana_objects.EVENTS_VIEW_ID)]
    formats = json.loads(events["attributes"]["fieldFormatMap"])
    fmt = formats["trace.id"]
    assert fmt["id"] == "url"
    url = fmt["params"]["urlTemplate"]
    prefix = "../app/discover#/?_a="
    assert url.startswith(prefix)
    state = _Rison(url[len(prefix) :]).parse()
    assert state["index"] == kibana_objects.EVENTS_VIEW_ID
    assert state["query"]["language"] == "kuery"
    assert unquote(state["query"]["query"]) == 'trace.id:"{{value}}"'


@pytest.mark.parametrize("view_id", [kibana_objects.EVENTS_VIEW_ID, kibana_objects.SPANS_VIEW_ID])
def test_trace_views_offer_an_apm_link(view_id: str) -> None:
    view = _by_key(_objects())[("index-pattern", view_id)]
    formats = json.loads(view["attributes"]["fieldFormatMap"])
    runtime = json.loads(view["attributes"]["runtimeFieldMap"])
    field = kibana_objects.APM_LINK_FIELD
    assert runtime[field]["type"] == "keyword"
    assert "emit(doc['trace.id'].value)" in runtime[field]["script"]["source"]
    assert formats[field]["params"]["urlTemplate"] == "../app/apm/link-to/trace/{{value}}"
    assert formats["trace.id"]["params"]["urlTemplate"] == kibana_objects.trace_events_url()


def test_rison_string_escaping() -> None:
    text = "it's ok!"
    encoded = kibana_objects._rison_string(text)
    assert encoded == "'it!'s ok!!'"
    assert _Rison(encoded).parse() == text
