"""The trace view: a trace's spans as a tree with its audit events under their spans.

Parents come before children and siblings are in start-time order, so reading the tree
depth-first is reading the trace causally. An event whose ``span.id`` matches a stored
span sits under that span; one whose span is unknown (not stored, expired, or never
exported) goes to ``unattached`` rather than being guessed into place. A span whose
parent is unknown becomes a root flagged ``missing_parent``; parent cycles, which only
corrupt data can create, are broken the same way.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_trace_view"]


def _span_view(src: dict[str, Any]) -> dict[str, Any]:
    span = src.get("span", {})
    out: dict[str, Any] = {
        "span_id": span.get("id", ""),
        "parent_id": src.get("parent", {}).get("id", ""),
        "name": span.get("name", ""),
        "kind": span.get("kind", "unspecified"),
        "service": src.get("service", {}).get("name", ""),
        "start": src.get("@timestamp", ""),
        "end": src.get("event", {}).get("end", ""),
        "duration_ns": src.get("event", {}).get("duration", 0),
        "status": span.get("status", {"code": "unset"}),
    }
    details = {k: src[k] for k in ("http", "url", "rpc", "db", "messaging", "error") if k in src}
    if details:
        out["attributes"] = details
    return out


def _event_key(ev: dict[str, Any]) -> tuple[str, str]:
    return (str(ev.get("@timestamp", "")), str(ev.get("event", {}).get("id", "")))


def build_trace_view(
    trace_id: str,
    spans: list[dict[str, Any]],
    events: list[dict[str, Any]],
    *,
    spans_truncated: bool = False,
    events_truncated: bool = False,
) -> dict[str, Any]:
    """Assemble the view from span and event ``_source`` documents of one trace."""
    nodes: dict[str, dict[str, Any]] = {}
    for src in spans:
        view = _span_view(src)
        sid = view["span_id"]
        if not sid or sid in nodes:
            continue
        nodes[sid] = {"span": view, "events": [], "children": []}

    unattached: list[dict[str, Any]] = []
    for ev in sorted(events, key=_event_key):
        sid = ev.get("span", {}).get("id", "")
        node = nodes.get(sid)
        if node is None:
            unattached.append(ev)
        else:
            node["events"].append(ev)

    def start_key(node: dict[str, Any]) -> tuple[str, str]:
        return (node["span"]["start"], node["span"]["span_id"])

    children_of: dict[str, list[dict[str, Any]]] = {}
    roots: list[dict[str, Any]] = []
    for sid, node in nodes.items():
        parent = node["span"]["parent_id"]
        if parent and parent in nodes and parent != sid:
            children_of.setdefault(parent, []).append(node)
        else:
            if parent:
                node["span"]["missing_parent"] = True
            roots.append(node)

    placed: set[str] = set()

    def attach(root: dict[str, Any], depth: int) -> None:
        # An explicit stack: a deep chain of spans must not hit the recursion limit.
        stack = [(root, depth)]
        while stack:
            node, level = stack.pop()
            sid = node["span"]["span_id"]
            placed.add(sid)
            node["span"]["depth"] = level
            kids = sorted(children_of.get(sid, []), key=start_key)
            node["children"] = [k for k in kids if k["span"]["span_id"] not in placed]
            for kid in node["children"]:
                placed.add(kid["span"]["span_id"])
            stack.extend((kid, level + 1) for kid in reversed(node["children"]))

    roots.sort(key=start_key)
    for root in roots:
        attach(root, 0)
    # Spans only reachable through a parent cycle: surface them as roots.
    leftovers = sorted((n for s, n in nodes.items() if s not in placed), key=start_key)
    for node in leftovers:
        if node["span"]["span_id"] in placed:
            continue
        node["span"]["missing_parent"] = True
        roots.append(node)
        attach(node, 0)

    starts = [n["span"]["start"] for n in nodes.values() if n["span"]["start"]]
    ends = [n["span"]["end"] for n in nodes.values() if n["span"]["end"]]
    ev_times = [str(e.get("@timestamp")) for e in events if e.get("@timestamp")]
    services = sorted(
        {n["span"]["service"] for n in nodes.values() if n["span"]["service"]}
        | {e.get("service", {}).get("name", "") for e in events} - {""}
    )
    return {
        "trace_id": trace_id,
        "services": services,
        "span_count": len(nodes),
        "event_count": len(events),
        "start": min(starts + ev_times) if starts or ev_times else None,
        "end": max(ends + ev_times) if ends or ev_times else None,
        "roots": roots,
        "unattached": unattached,
        "truncated": {"spans": spans_truncated, "events": events_truncated},
    }
