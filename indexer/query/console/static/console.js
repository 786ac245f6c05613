// The otel-audit console: one page, every read through the query API with the user's
// token, so each view is recorded in the read audit. Values are only ever put into the
// page as text (textContent), never as HTML.
import {
  addKey, cryptoAvailable, parseCheckpoint, parseJsonStrict, rawKeyFromText, verifyBundle,
  verifyCheckpoint,
} from "./verify.js";

const API = "/api/v1";
const BASE = "/console";
const TOKEN_KEY = "otel-audit-token";
const PINNED_KEY = "otel-audit-pinned-keys";
const FILTERS = [
  ["actor", "Actor id"], ["action", "Action (invoice.* ok)"], ["resource_type", "Resource type"],
  ["resource_id", "Resource id"], ["outcome", "Outcome"], ["category", "Category"],
  ["service", "Service"], ["tenant", "Tenant"], ["correlation_id", "Correlation id"],
  ["trace_id", "Trace id"], ["from", "From (now-24h, 2026-01-01, RFC 3339)"], ["to", "To"],
  ["q", "Free text"],
];
const ENUMS = {
  outcome: ["success", "failure", "denied", "unknown"],
  category: ["authentication", "authorization", "permission_change", "data_access", "data_change",
    "configuration", "integration", "user_action", "system"],
};

// ---------- small DOM helpers ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function link(href, text, attrs = {}) {
  return h("a", { href, "data-nav": true, ...attrs }, text);
}

function pill(outcome) {
  return h("span", { class: `pill ${outcome || ""}` }, outcome || "-");
}

const main = () => document.getElementById("main");

function render(title, ...content) {
  const m = main();
  m.replaceChildren(...(title ? [h("h1", {}, title)] : []), ...content.flat());
  document.title = title ? `${title} · otel-audit` : "otel-audit console";
}

function ready(page) {
  main().dataset.page = page;
  main().dataset.state = "ready";
}

function failed(err) {
  main().append(h("p", { class: "error", id: "error" }, err.message || String(err)));
  main().dataset.state = "error";
}

// ---------- token and API ----------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY);
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function apiFetch(path, params) {
  const url = new URL(API + path, location.origin);
  if (params) for (const [k, v] of params) url.searchParams.append(k, v);
  const resp = await fetch(url, { headers: { Authorization: `Bearer ${token() || ""}` } });
  if (resp.status === 401) {
    toLogin();
    throw new ApiError(401, "the token was refused: log in again");
  }
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try {
      const body = await resp.json();
      if (body.error) message = body.error.message;
    } catch (e) { /* not JSON */ }
    throw new ApiError(resp.status, message);
  }
  return resp;
}

async function api(path, params) {
  return parseJsonStrict(await (await apiFetch(path, params)).text());
}

function toLogin() {
  const next = location.pathname + location.search;
  if (!location.pathname.startsWith(`${BASE}/login`)) {
    history.replaceState({}, "", `${BASE}/login?next=${encodeURIComponent(next)}`);
    route();
  }
}

// ---------- keys: configured on the server, or pinned in this browser ----------

function pinnedKeys() {
  try {
    return JSON.parse(localStorage.getItem(PINNED_KEY) || "[]");
  } catch (e) {
    return [];
  }
}

let ringPromise = null;

// With pinned keys the page trusts only those; otherwise the server's configured keys.
function keyring() {
  if (ringPromise) return ringPromise;
  ringPromise = (async () => {
    const ring = new Map();
    if (!cryptoAvailable()) return ring;
    const pinned = pinnedKeys();
    if (pinned.length) {
      for (const p of pinned) await addKey(ring, p.raw, `pinned in this browser (${p.label})`);
      ring.pinned = true;
      return ring;
    }
    const resp = await fetch(`${API}/keys`);
    if (resp.ok) {
      for (const k of (await resp.json()).keys) {
        await addKey(ring, k.public_key, `configured on the server: ${k.source}`);
      }
    }
    return ring;
  })();
  return ringPromise;
}

// ---------- formatting ----------

function get(doc, dotted) {
  let node = doc;
  for (const part of dotted.split(".")) {
    if (node === null || typeof node !== "object" || !(part in node)) return undefined;
    node = node[part];
  }
  return node;
}

function flatten(doc, prefix = "", out = []) {
  for (const key of Object.keys(doc).sort()) {
    const v = doc[key];
    const name = prefix ? `${prefix}.${key}` : key;
    if (v !== null && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) {
      flatten(v, name, out);
    } else {
      out.push([name, typeof v === "string" ? v : JSON.stringify(v)]);
    }
  }
  return out;
}

function tsNs(text) {
  // RFC 3339 with up to nanoseconds -> nanoseconds since the epoch (as a Number).
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(text || "");
  if (!m) return NaN;
  const ms = Date.parse(m[1] + m[3]);
  return ms * 1e6 + Number((m[2] || "").padEnd(9, "0"));
}

function shortTime(text) {
  return (text || "").replace("T", " ").replace(/(\.\d{3})\d*Z$/, "$1Z");
}

function ago(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} days`;
}

function resourceOf(e) {
  const t = get(e, "audit.resource.type");
  const i = get(e, "audit.resource.id");
  return t || i ? `${t || ""}/${i || ""}` : "";
}

// ---------- pages ----------

function loginPage() {
  const next = new URLSearchParams(location.search).get("next") || `${BASE}/events`;
  const input = h("input", { type: "password", id: "token", autocomplete: "off", required: true,
    placeholder: "oat_…" });
  const remember = h("input", { type: "checkbox", id: "remember" });
  const msg = h("p", { class: "muted", id: "login-message" },
    "Use a query API token with the reader role (otel-audit tokens generate). Every page you " +
    "open is recorded in the audit log under the token's subject.");
  const form = h("form", { class: "card login", id: "login-form" },
    h("h1", {}, "Log in"), h("label", { for: "token" }, "API token"), input,
    h("label", {}, remember, " remember on this browser"), h("div", { class: "actions" },
      h("button", { type: "submit", id: "login" }, "Log in")), msg);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const value = input.value.trim();
    const resp = await fetch(`${API}/whoami`, { headers: { Authorization: `Bearer ${value}` } });
    if (!resp.ok) {
      let text = `refused (${resp.status})`;
      try { text = (await resp.json()).error.message; } catch (e) { /* keep */ }
      msg.className = "error";
      msg.textContent = `Login failed: ${text}`;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    if (remember.checked) localStorage.setItem(TOKEN_KEY, value);
    navigate(next.startsWith(`${BASE}/`) && !next.startsWith(`${BASE}/login`) ? next : `${BASE}/events`);
  });
  render(null, form);
  input.focus();
  ready("login");
}

async function searchPage() {
  const params = new URLSearchParams(location.search);
  const form = h("form", { class: "filters card", id: "filters" });
  for (const [name, label] of FILTERS) {
    let input;
    if (ENUMS[name]) {
      input = h("select", { name, id: `f-${name}` }, h("option", { value: "" }, "any"),
        ENUMS[name].map((v) => h("option", { value: v, selected: params.get(name) === v }, v)));
    } else {
      input = h("input", { name, id: `f-${name}`, value: params.get(name) || "" });
    }
    form.append(h("label", {}, label, input));
  }
  form.append(h("label", {}, "Page size", h("input", { name: "limit", id: "f-limit", type: "number",
    min: 1, max: 1000, value: params.get("limit") || "50" })));
  form.append(h("div", {}, h("button", { type: "submit", id: "search" }, "Search")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim()) q.append(k, String(v).trim());
    navigate(`${BASE}/events?${q}`);
  });
  const filters = [...params].filter(([k]) => k !== "limit");
  const results = h("div", { id: "results" });
  const status = h("span", { class: "pager", id: "pager" });
  const next = h("button", { type: "button", id: "next-page", class: "secondary", disabled: true }, "Next page →");
  const first = h("button", { type: "button", id: "first-page", class: "secondary", disabled: true }, "First page");
  const exportCsv = h("button", { type: "button", id: "export-csv", class: "secondary" }, "Export CSV");
  const exportNd = h("button", { type: "button", id: "export-ndjson", class: "secondary" }, "Export NDJSON");
  const exportMsg = h("span", { class: "muted", id: "export-message" });
  render("Audit events", form, h("div", { class: "actions" }, first, next, status,
    h("span", { class: "spacer" }), exportCsv, exportNd, exportMsg), results);

  let page = 1;
  let cursor = null;
  const limit = params.get("limit") || "50";
  const show = async (useCursor) => {
    main().dataset.state = "loading";
    const body = useCursor
      ? await api("/events", [["cursor", cursor], ["limit", limit]])
      : await api("/events", [...filters, ["limit", limit]]);
    cursor = body.next_cursor;
    results.replaceChildren(eventsTable(body.events));
    status.textContent = `page ${page} · ${body.count} events${cursor ? "" : " · end of results"}`;
    next.disabled = !cursor;
    first.disabled = page === 1;
    ready("search");
  };
  next.addEventListener("click", () => { page += 1; show(true).catch(failed); });
  first.addEventListener("click", () => { page = 1; show(false).catch(failed); });
  const doExport = async (fmt) => {
    exportMsg.textContent = "exporting…";
    const resp = await apiFetch("/export", [...filters, ["format", fmt]]);
    const blob = await resp.blob();
    const name = (/filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "") || [])[1]
      || `audit-events.${fmt}`;
    const a = h("a", { href: URL.createObjectURL(blob), download: name });
    document.body.append(a);
    a.click();
    a.remove();
    const max = Number(resp.headers.get("X-Export-Max-Events") || 0);
    const text = await blob.text();
    const rows = text.split("\n").filter((l) => l.trim()).length - (fmt === "csv" ? 1 : 0);
    exportMsg.textContent = `${name}: ${rows} events` +
      (max && rows >= max ? ` (the export limit; narrow the filters or use otel-audit query --all)` : "");
  };
  exportCsv.addEventListener("click", () => doExport("csv").catch(failed));
  exportNd.addEventListener("click", () => doExport("ndjson").catch(failed));
  await show(false);
}

function eventsTable(events) {
  if (!events.length) return h("p", { class: "muted", id: "no-events" }, "No events match.");
  return h("table", { id: "events" },
    h("thead", {}, h("tr", {}, ["Time (UTC)", "Action", "Outcome", "Actor", "Resource", "Service",
      "Tenant", "Event id"].map((t) => h("th", {}, t)))),
    h("tbody", {}, events.map((e) => h("tr", { "data-event-id": get(e, "event.id") },
      h("td", { class: "mono" }, shortTime(e["@timestamp"])),
      h("td", {}, get(e, "event.action") || ""),
      h("td", {}, pill(get(e, "audit.outcome"))),
      h("td", {}, get(e, "user.id") || ""),
      h("td", {}, resourceOf(e)),
      h("td", {}, get(e, "service.name") || ""),
      h("td", {}, get(e, "organization.id") || ""),
      h("td", { class: "mono" }, link(`${BASE}/events/${encodeURIComponent(get(e, "event.id"))}`,
        get(e, "event.id"), { class: "event-link" }))))));
}

async function eventPage(id) {
  render(`Event ${id}`, h("p", { class: "muted" }, "Loading…"));
  const body = await api(`/events/${encodeURIComponent(id)}`);
  const e = body.event;
  const integrity = h("div", { class: "card", id: "integrity" }, h("h2", {}, "Integrity"),
    h("p", { class: "muted" }, "Checking…"));
  const traceBox = h("div", { id: "trace-box" });
  const fields = h("table", { class: "fields", id: "fields" }, h("tbody", {},
    flatten(e).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v)))));
  render(`${get(e, "event.action")} by ${get(e, "user.id")}`,
    h("div", { class: "grid2" },
      h("div", { class: "card" }, h("dl", { class: "kv" },
        h("dt", {}, "event id"), h("dd", { id: "event-id" }, get(e, "event.id")),
        h("dt", {}, "time"), h("dd", {}, e["@timestamp"]),
        h("dt", {}, "outcome"), h("dd", {}, pill(get(e, "audit.outcome"))),
        h("dt", {}, "resource"), h("dd", {}, resourceOf(e)),
        h("dt", {}, "service"), h("dd", {}, get(e, "service.name") || ""),
        h("dt", {}, "index"), h("dd", {}, body.index),
        h("dt", {}, "trace"), h("dd", {}, body.trace
          ? link(`${BASE}/traces/${body.trace.id}${body.trace.span_id ? `?span=${body.trace.span_id}` : ""}`,
            body.trace.id, { id: "trace-link" })
          : "none"))),
      integrity),
    traceBox, h("h2", {}, "Stored fields"), fields);
  const work = [checkIntegrity(integrity, id, e, body.block)];
  if (body.trace) {
    work.push(api(`/traces/${body.trace.id}`).then((view) => {
      traceBox.replaceChildren(h("h2", {}, "Trace"), timeline(view, {
        span: body.trace.span_id, event: get(e, "event.id") }));
    }, (err) => traceBox.replaceChildren(h("h2", {}, "Trace"), h("p", { class: "muted" }, err.message))));
  }
  await Promise.all(work);
  ready("event");
}

async function checkIntegrity(box, id, shown, block) {
  const title = h("h2", {}, "Integrity");
  if (!block) {
    box.replaceChildren(title, h("div", { class: "status warn", id: "proof-status", "data-result": "unsealed" },
      h("strong", {}, "Not sealed yet"),
      "The event is stored but no signed block covers it yet (blocks are sealed within a second or so)."));
    return;
  }
  let bundle;
  try {
    bundle = await api(`/events/${encodeURIComponent(id)}/proof`);
  } catch (err) {
    box.replaceChildren(title, h("div", { class: "status bad", id: "proof-status", "data-result": "failed" },
      h("strong", {}, "Proof FAILED"), `The server could not produce a proof: ${err.message}`));
    return;
  }
  if (!cryptoAvailable()) {
    box.replaceChildren(title, h("div", { class: "status warn", id: "proof-status", "data-result": "unchecked" },
      h("strong", {}, "Not checked"), "This browser offers no WebCrypto on this page: open the " +
      "console over HTTPS (or on localhost), or download the bundle and run otel-audit verify-proof."));
    return;
  }
  const ring = await keyring();
  const result = await verifyBundle(bundle, ring, shown);
  const download = h("button", { type: "button", class: "secondary", id: "download-proof" }, "Download proof bundle");
  download.addEventListener("click", () => {
    const a = h("a", { href: URL.createObjectURL(new Blob([JSON.stringify(bundle, null, 2)],
      { type: "application/json" })), download: `proof-${id}.json` });
    document.body.append(a);
    a.click();
    a.remove();
  });
  const details = h("dl", { class: "kv" },
    h("dt", {}, "chain"), h("dd", {}, result.origin ?? "-"),
    h("dt", {}, "leaf"), h("dd", {}, `${result.leaf_index ?? "-"} of ${result.tree_size ?? "-"}`),
    h("dt", {}, "checkpoint"), h("dd", {}, result.sequence !== undefined
      ? `#${result.sequence}, signed ${new Date(result.timestamp_ms).toISOString()}` : "-"),
    h("dt", {}, "root"), h("dd", {}, result.root_hash ?? "-"),
    h("dt", {}, "key"), h("dd", {}, `${result.key_id ?? "-"}${result.key_source ? ` (${result.key_source})` : ""}`),
    h("dt", {}, "event hash"), h("dd", { id: "computed-leaf" }, result.computed_leaf ?? "-"));
  const status = result.ok
    ? h("div", { class: "status ok", id: "proof-status", "data-result": "verified" },
      h("strong", {}, "Proof verified in this browser"),
      "This document hashes to a leaf whose audit path leads to the signed root, and the " +
      "checkpoint signature verifies with the key above (Ed25519 and SHA-256 by WebCrypto).")
    : h("div", { class: "status bad", id: "proof-status", "data-result": "failed" },
      h("strong", {}, "Proof FAILED"),
      h("ul", { id: "proof-reasons" }, result.reasons.map((r) =>
        h("li", { "data-code": r.code }, `${r.code}: ${r.message}`))));
  box.replaceChildren(title, status, details, h("div", { class: "actions" }, download,
    h("span", { class: "muted" }, "offline: otel-audit verify-proof FILE --public-key KEY")));
}

function timeline(view, { span = null, event = null } = {}) {
  const rows = [];
  const walk = (node) => {
    rows.push(node);
    for (const c of node.children) walk(c);
  };
  for (const r of view.roots) walk(r);
  const times = [];
  for (const n of rows) {
    const s = tsNs(n.span.start);
    times.push(s, s + Number(n.span.duration_ns || 0));
    for (const e of n.events) times.push(tsNs(e["@timestamp"]));
  }
  for (const e of view.unattached) times.push(tsNs(e["@timestamp"]));
  const valid = times.filter((t) => Number.isFinite(t));
  const t0 = Math.min(...valid);
  const t1 = Math.max(...valid, t0 + 1);
  const pct = (t) => `${(((t - t0) / (t1 - t0)) * 100).toFixed(3)}%`;
  const total = (t1 - t0) / 1e6;
  const box = h("div", { class: "timeline", id: "timeline" },
    h("div", { class: "tl-axis" }, h("span", {},
      `${view.services.join(", ")} · ${view.span_count} spans · ${view.event_count} audit events`),
    h("span", { class: "ticks" }, [0, 0.25, 0.5, 0.75, 1].map((f) =>
      h("span", {}, `${(total * f).toFixed(total < 10 ? 2 : 0)} ms`)))));
  const eventLines = (events, depth) => events.map((e) => {
    const eid = get(e, "event.id");
    return h("div", { class: `tl-event${eid === event ? " current" : ""}`, "data-event-id": eid },
      h("span", { class: "what", style: null },
        `${shortTime(e["@timestamp"]).slice(11)}  `, pill(get(e, "audit.outcome")), " ",
        link(`${BASE}/events/${encodeURIComponent(eid)}`, get(e, "event.action") || eid),
        ` by ${get(e, "user.id") || "?"}${resourceOf(e) ? ` on ${resourceOf(e)}` : ""}`));
  });
  for (const n of rows) {
    const s = n.span;
    const start = tsNs(s.start);
    const bar = h("div", { class: `tl-bar${s.status && s.status.code === "error" ? " error" : ""}`,
      title: `${s.name} (${(Number(s.duration_ns || 0) / 1e6).toFixed(2)} ms)` });
    bar.style.left = pct(start);
    bar.style.width = `${Math.max(0.2, (Number(s.duration_ns || 0) / (t1 - t0)) * 100)}%`;
    const track = h("div", { class: "tl-track" }, bar);
    for (const e of n.events) {
      const mark = h("div", { class: `tl-mark ${get(e, "audit.outcome") || ""}${get(e, "event.id") === event ? " current" : ""}`,
        title: get(e, "event.action") || "" });
      mark.style.left = pct(tsNs(e["@timestamp"]));
      track.append(mark);
    }
    const label = h("div", { class: "tl-label" }, s.name, h("span", { class: "svc" }, s.service),
      s.missing_parent ? h("span", { class: "svc" }, "(parent not stored)") : null);
    label.style.paddingLeft = `${(s.depth || 0) * 14}px`;
    box.append(h("div", { class: `tl-row span${s.span_id === span ? " highlight" : ""}`, "data-span-id": s.span_id },
      label, track), ...eventLines(n.events, s.depth || 0));
  }
  if (view.unattached.length) {
    box.append(h("div", { class: "tl-row" }, h("div", { class: "tl-label muted" },
      "audit events whose span is not stored"), h("div")), ...eventLines(view.unattached, 0));
  }
  if (view.truncated && (view.truncated.spans || view.truncated.events)) {
    box.append(h("p", { class: "muted" }, "(truncated: the trace is larger than the API returns)"));
  }
  return box;
}

async function tracePage(traceId) {
  render(`Trace ${traceId}`, h("p", { class: "muted" }, "Loading…"));
  const span = new URLSearchParams(location.search).get("span");
  const view = await api(`/traces/${encodeURIComponent(traceId)}`);
  render(`Trace ${traceId}`, h("div", { class: "actions" },
    link(`${BASE}/events?trace_id=${traceId}`, "Search this trace's audit events")),
  timeline(view, { span }));
  ready("trace");
}

async function chainPage() {
  render("Chain status", h("p", { class: "muted" }, "Loading…"));
  const [body, ring] = await Promise.all([api("/chains"), keyring()]);
  const cards = [];
  for (const c of body.chains) cards.push(await chainCard(c, ring, body.stale_after_s));
  if (!body.chains.length) cards.push(h("p", { class: "muted", id: "no-chains" }, "Nothing sealed yet."));
  const verifyCard = scheduledVerifyCard(body.scheduled_verify);
  render("Chain status", cards, verifyCard, keysCard(ring));
  ready("chain");
}

async function chainCard(c, ring, staleAfter) {
  const cp = c.last_checkpoint;
  let sig = "no checkpoint";
  let cls = "warn";
  let age = null;
  if (cp && cp.checkpoint) {
    try {
      const parsed = parseCheckpoint(cp.checkpoint);
      const status = ring.size ? await verifyCheckpoint(parsed, ring) : "unknown_key";
      age = (Date.now() - parsed.timestamp_ms) / 1000;
      if (status === "ok") {
        const stale = age > staleAfter;
        sig = stale ? `signature verified, but the newest checkpoint is ${ago(age)} old (over ${ago(staleAfter)})`
          : `signature verified in this browser; newest checkpoint ${ago(age)} old`;
        cls = stale ? "warn" : "ok";
      } else {
        sig = status === "unknown_key" ? `signed by key ${parsed.key_id}, which this page does not hold`
          : `signature does NOT verify with key ${parsed.key_id}`;
        cls = "bad";
      }
    } catch (e) {
      sig = `malformed checkpoint: ${e.message}`;
      cls = "bad";
    }
  }
  const b = c.last_block;
  const witness = witnessView(c.witness);
  return h("div", { class: "card chain", "data-chain": c.chain_id },
    h("h2", {}, `Chain ${c.chain_id}`),
    h("div", { class: `status ${cls}`, "data-result": cls }, sig),
    h("dl", { class: "kv" },
      h("dt", {}, "records"), h("dd", {}, `${c.records} (${c.blocks} blocks, ${c.records - c.blocks} heartbeats)`),
      h("dt", {}, "last block"), h("dd", { class: "last-block" }, b
        ? `#${b.sequence}: ${b.leaf_count} events, tree size ${b.tree_size}, sealed ${new Date(b.checkpoint.timestamp_ms).toISOString()}`
        : "none"),
      h("dt", {}, "last checkpoint"), h("dd", {}, cp
        ? `#${cp.sequence} (${cp.kind}), tree size ${cp.tree_size}, key ${cp.key_id}${age !== null ? `, ${ago(age)} ago` : ""}`
        : "none"),
      h("dt", {}, "witness cosignatures"), h("dd", { class: "witness" }, witness)));
}

// The server checks cosignatures against its configured witness keys (the browser holds none).
function witnessView(w) {
  if (!w) return h("span", { class: "muted", "data-witness": "not-configured" }, "not configured on this server");
  if (!w.configured.length && !w.cosignatures.length && w.sequence === null) {
    return h("span", { class: "muted", "data-witness": "not-configured" },
      "no witness configured (watch.witness_urls, watch.witness_keys) and no cosigned note stored");
  }
  const configured = w.configured.length
    ? `witness keys configured: ${w.configured.map((k) => `${k.name} (${k.key_id})`).join(", ")}`
    : "no witness key configured: cosignatures are listed unchecked";
  const items = w.cosignatures.map((s) => h("li", { class: `cosignature ${s.status === "valid" ? "ok" : s.status === "invalid" ? "bad" : "warn"}`, "data-status": s.status },
    `${s.name} key ${s.key_id}, ${s.timestamp !== null ? new Date(s.timestamp * 1000).toISOString() : "no time"}: `,
    h("strong", {}, s.status === "valid" ? "valid (checked by the server)"
      : s.status === "invalid" ? "INVALID" : "unchecked (no configured key)")));
  const head = w.sequence !== null
    ? `newest cosigned checkpoint #${w.sequence} (tree size ${w.tree_size ?? "?"}); newest checkpoint #${w.newest_sequence}`
    : "";
  return h("div", { "data-witness": w.cosignatures.length ? "cosigned" : "none" },
    w.problem ? h("div", { class: "muted problem" }, [head, w.problem].filter(Boolean).join(": ")) : h("div", {}, head),
    items.length ? h("ul", {}, items) : null,
    h("div", { class: "muted" }, configured));
}

function scheduledVerifyCard(sv) {
  const card = h("div", { class: "card", id: "scheduled-verify" }, h("h2", {}, "Scheduled verify"));
  if (!sv) {
    card.append(h("p", { class: "muted", "data-verify": "not-configured" }, "Not configured on this server " +
      "(watch.enabled). Run otel-audit verify to check every event against the signed blocks."));
    return card;
  }
  const kinds = sv.findings ? Object.entries(sv.findings) : [];
  const result = sv.completed_ms === null ? ["warn", "no run completed yet"]
    : kinds.length ? ["bad", `findings: ${kinds.map(([k, n]) => `${k} ${n}`).join(", ")}`]
      : ["ok", "clean: no findings"];
  card.append(
    h("div", { class: `status ${result[0]}`, "data-verify": result[0] }, result[1]),
    h("dl", { class: "kv" },
      h("dt", {}, "last run"), h("dd", { class: "verify-time" }, sv.completed_ms === null ? "none yet"
        : `${new Date(sv.completed_ms).toISOString()} (${ago((Date.now() - sv.completed_ms) / 1000)} ago)`),
      h("dt", {}, "duration"), h("dd", { class: "verify-duration" }, sv.duration_s == null ? "-" : `${sv.duration_s.toFixed(2)} s`),
      h("dt", {}, "events checked"), h("dd", {}, sv.events_checked == null ? "-" : String(sv.events_checked)),
      h("dt", {}, "findings by kind"), h("dd", { class: "verify-findings" }, sv.findings === null ? "-"
        : kinds.length ? kinds.map(([k, n]) => `${k}: ${n}`).join(", ") : "none"),
      h("dt", {}, "stale"), h("dd", { class: "verify-stale" }, sv.stale
        ? `yes: no run completed within two intervals (${ago(sv.interval_s)} each)` : "no"),
      h("dt", {}, "interval"), h("dd", {}, ago(sv.interval_s))));
  return card;
}

function keysCard(ring) {
  const list = h("ul", { id: "keys" }, [...ring.entries()].map(([kid, k]) =>
    h("li", {}, h("code", {}, kid), ` ${k.source}`)));
  const area = h("textarea", { id: "pin-key", rows: 4, placeholder: "-----BEGIN PUBLIC KEY----- … or base64 of the raw 32 bytes" });
  const msg = h("span", { class: "muted" });
  const pin = h("button", { type: "button", id: "pin" }, "Pin this key");
  const clear = h("button", { type: "button", class: "secondary", id: "unpin" }, "Forget pinned keys");
  pin.addEventListener("click", () => {
    try {
      const raw = rawKeyFromText(area.value);
      localStorage.setItem(PINNED_KEY, JSON.stringify([...pinnedKeys(), { raw, label: new Date().toISOString() }]));
      ringPromise = null;
      navigate(location.pathname);
    } catch (e) {
      msg.textContent = e.message;
    }
  });
  clear.addEventListener("click", () => {
    localStorage.removeItem(PINNED_KEY);
    ringPromise = null;
    navigate(location.pathname);
  });
  return h("div", { class: "card", id: "keys-card" }, h("h2", {}, "Verification keys"),
    h("p", { class: "muted" }, ring.pinned
      ? "Proofs and checkpoints are checked only against the keys you pinned in this browser."
      : "Proofs and checkpoints are checked against the keys configured on the server " +
        "(console.public_keys). Pin a key you obtained independently to trust only it."),
    ring.size ? list : h("p", { class: "error" }, "No verification key: nothing can be checked."),
    area, h("div", { class: "actions" }, pin, clear, msg));
}

// ---------- routing ----------

let subjectShown = false;

function showSubject() {
  if (subjectShown) return;
  subjectShown = true;
  fetch(`${API}/whoami`, { headers: { Authorization: `Bearer ${token()}` } })
    .then((r) => (r.ok ? r.json() : null))
    .then((me) => { if (me) document.getElementById("who").textContent = me.subject; })
    .catch(() => { subjectShown = false; });
}

function navigate(url) {
  history.pushState({}, "", url);
  route();
}

async function route() {
  const path = location.pathname.replace(/\/+$/, "");
  document.getElementById("nav-search").classList.toggle("active", path.startsWith(`${BASE}/events`));
  document.getElementById("nav-chain").classList.toggle("active", path === `${BASE}/chain`);
  const logout = document.getElementById("logout");
  logout.hidden = !token();
  if (path === `${BASE}/login`) return loginPage();
  if (!token()) return toLogin();
  main().dataset.state = "loading";
  showSubject();
  try {
    let m;
    if ((m = /^\/console\/events\/([^/]+)$/.exec(path))) return await eventPage(decodeURIComponent(m[1]));
    if ((m = /^\/console\/traces\/([^/]+)$/.exec(path))) return await tracePage(decodeURIComponent(m[1]));
    if (path === `${BASE}/chain`) return await chainPage();
    if (path === BASE || path === `${BASE}/events`) return await searchPage();
    render("Not found", h("p", {}, "No such page. "), link(`${BASE}/events`, "Search events"));
    ready("not-found");
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) failed(err);
  }
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest && ev.target.closest("a[data-nav]");
  if (a && a.origin === location.origin && !ev.ctrlKey && !ev.metaKey && ev.button === 0) {
    ev.preventDefault();
    navigate(a.pathname + a.search);
  }
});
window.addEventListener("popstate", route);
document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
  subjectShown = false;
  document.getElementById("who").textContent = "";
  navigate(`${BASE}/login`);
});
route();
