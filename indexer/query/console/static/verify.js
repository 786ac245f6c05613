// Proof checking in the browser: RFC 8785 canonical JSON, RFC 9162 Merkle inclusion,
// Ed25519 checkpoint signatures, all through WebCrypto (SHA-256, Ed25519). The same
// checks as `otel-audit verify-proof` (otel_audit/integrity/bundle.py), reason codes
// included. Nothing from the server is believed: the event hash is computed here from the
// document shown, the path must lead to the signed root, and the signature must verify
// with a key the page holds (configured on the server or pinned by the user).

const enc = new TextEncoder();
export const CHECKPOINT_FORMAT = "otel-audit.checkpoint.v1";
export const BUNDLE_FORMAT = "otel-audit.inclusion-proof.v1";
const ORIGIN_RE = /^[\x21-\x7e]{1,255}$/;
const KEY_ID_RE = /^[0-9a-f]{16}$/;
const MAX_PATH = 64;

export class ProofError extends Error {}

export function cryptoAvailable() {
  return typeof crypto !== "undefined" && crypto.subtle !== undefined;
}

function requireCrypto() {
  if (!cryptoAvailable()) {
    throw new ProofError(
      "this browser offers no WebCrypto here: open the console over HTTPS or on localhost");
  }
}

// ---- base64 (standard, padded; exactly one encoding per value) ----

export function b64encode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function b64decode(text, name = "value", length = null) {
  if (typeof text !== "string") throw new ProofError(`${name} must be a base64 string`);
  let raw;
  try {
    raw = atob(text);
  } catch (e) {
    throw new ProofError(`${name} is not valid base64`);
  }
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  if (b64encode(out) !== text) throw new ProofError(`${name} is not canonical base64`);
  if (length !== null && out.length !== length) {
    throw new ProofError(`${name} must be the base64 of ${length} bytes`);
  }
  return out;
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export async function sha256(bytes) {
  requireCrypto();
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

// ---- strict JSON: integers beyond 2^53 - 1 have no RFC 8785 form ----

export function parseJsonStrict(text) {
  return JSON.parse(text, function (key, value, context) {
    if (typeof value === "number") {
      const src = context && context.source;
      if (!Number.isFinite(value)) throw new ProofError("a number is out of range");
      if (src !== undefined && /^-?\d+$/.test(src) && !Number.isSafeInteger(Number(src))) {
        throw new ProofError(`the integer ${src} is beyond 2^53 - 1 (no RFC 8785 form)`);
      }
    }
    return value;
  });
}

// ---- RFC 8785 (JCS): ECMAScript's own JSON.stringify for scalars, sorted keys ----

function checkString(s) {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const n = s.charCodeAt(i + 1);
      if (!(n >= 0xdc00 && n <= 0xdfff)) throw new ProofError("a string holds a lone surrogate");
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      throw new ProofError("a string holds a lone surrogate");
    }
  }
  return s;
}

export function canonicalJson(value) {
  if (value === null || value === true || value === false) return JSON.stringify(value);
  switch (typeof value) {
    case "number":
      if (!Number.isFinite(value)) throw new ProofError("NaN and infinities have no RFC 8785 form");
      return JSON.stringify(value); // Number::toString is RFC 8785's number form; -0 -> "0"
    case "string":
      return JSON.stringify(checkString(value));
    case "object":
      if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
      // Default sort compares UTF-16 code units, which is what RFC 8785 specifies.
      return "{" + Object.keys(value).sort().map(
        (k) => JSON.stringify(checkString(k)) + ":" + canonicalJson(value[k])).join(",") + "}";
    default:
      throw new ProofError(`a ${typeof value} has no JSON form`);
  }
}

const LEAF = Uint8Array.of(0);
const NODE = Uint8Array.of(1);

export async function leafHashOfBytes(bytes) {
  return sha256(concat(LEAF, bytes));
}

// The leaf of a stored event: its document without the top-level "integrity" member.
export async function leafHashOfDocument(doc) {
  const copy = Object.assign({}, doc);
  delete copy.integrity;
  return leafHashOfBytes(enc.encode(canonicalJson(copy)));
}

async function nodeHash(left, right) {
  return sha256(concat(NODE, left, right));
}

// ---- RFC 9162 section 2.1.3.2: the root an inclusion proof leads to ----

export async function rootFromInclusionProof(leaf, index, size, path) {
  let fn = BigInt(index);
  let sn = BigInt(size) - 1n;
  if (BigInt(index) >= BigInt(size)) throw new ProofError(`index ${index} is not below size ${size}`);
  if (leaf.length !== 32) throw new ProofError("the leaf hash is not 32 bytes");
  let r = leaf;
  for (const p of path) {
    if (p.length !== 32) throw new ProofError("a proof hash is not 32 bytes");
    if (sn === 0n) throw new ProofError("the proof is longer than the tree is deep");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new ProofError("the proof is shorter than the tree is deep");
  return r;
}

export async function verifyInclusion(leaf, index, size, path, root) {
  const got = await rootFromInclusionProof(leaf, index, size, path);
  if (!equal(got, root)) throw new ProofError("the audit path does not lead to the signed root");
}

// ---- checkpoints (otel_audit/integrity/checkpoint.py) ----

const CP_KEYS = ["format", "origin", "tree_size", "root_hash", "sequence", "previous_hash",
  "timestamp_ms", "key_id", "signature"];

function checkInt(v, name) {
  if (!Number.isSafeInteger(v) || v < 0) throw new ProofError(`${name} must be a non-negative integer`);
  return v;
}

// Parse strictly, then rebuild the signed body from the fields (never trust any text).
export function parseCheckpoint(cp) {
  if (cp === null || typeof cp !== "object" || Array.isArray(cp)) {
    throw new ProofError("checkpoint must be an object");
  }
  const keys = Object.keys(cp).sort();
  if (keys.join() !== [...CP_KEYS].sort().join()) throw new ProofError("checkpoint fields wrong");
  if (cp.format !== CHECKPOINT_FORMAT) throw new ProofError(`checkpoint format ${cp.format} unknown`);
  if (typeof cp.origin !== "string" || !ORIGIN_RE.test(cp.origin)) {
    throw new ProofError("origin must be 1-255 printable ASCII characters without spaces");
  }
  if (typeof cp.key_id !== "string" || !KEY_ID_RE.test(cp.key_id)) {
    throw new ProofError("key_id must be 16 lowercase hex characters");
  }
  return {
    origin: cp.origin,
    tree_size: checkInt(cp.tree_size, "tree_size"),
    root_hash: b64decode(cp.root_hash, "root_hash", 32),
    root_b64: cp.root_hash,
    sequence: checkInt(cp.sequence, "sequence"),
    previous_b64: (b64decode(cp.previous_hash, "previous_hash", 32), cp.previous_hash),
    timestamp_ms: checkInt(cp.timestamp_ms, "timestamp_ms"),
    key_id: cp.key_id,
    signature: b64decode(cp.signature, "signature", 64),
  };
}

export function checkpointBody(p) {
  return enc.encode(
    `${p.origin}\n${p.tree_size}\n${p.root_b64}\nformat ${CHECKPOINT_FORMAT}\n` +
    `sequence ${p.sequence}\nprevious ${p.previous_b64}\ntimestamp_ms ${p.timestamp_ms}\n`);
}

// A keyring: key id -> {key: CryptoKey, source}. Key ids are computed here, never taken
// from the server's word.
export async function keyIdOf(raw) {
  return hex((await sha256(raw)).slice(0, 8));
}

export async function addKey(ring, rawB64, source) {
  requireCrypto();
  const raw = b64decode(rawB64, "public key", 32);
  const kid = await keyIdOf(raw);
  const key = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
  ring.set(kid, { key, source, raw: rawB64 });
  return kid;
}

// PEM SubjectPublicKeyInfo of an Ed25519 key, or the base64 of the raw 32 bytes.
export function rawKeyFromText(text) {
  const t = text.trim();
  if (t.includes("PRIVATE KEY")) throw new ProofError("this is a private key: give the public key");
  if (t.startsWith("-----BEGIN PUBLIC KEY-----")) {
    const body = t.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, "");
    const der = b64decode(body, "PEM body");
    const prefix = Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]);
    if (der.length !== 44 || !equal(der.slice(0, 12), prefix)) {
      throw new ProofError("not an Ed25519 public key (SubjectPublicKeyInfo)");
    }
    return b64encode(der.slice(12));
  }
  b64decode(t, "public key", 32);
  return t;
}

export async function verifyCheckpoint(parsed, ring) {
  const entry = ring.get(parsed.key_id);
  if (!entry) return "unknown_key";
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, entry.key, parsed.signature,
    checkpointBody(parsed));
  return ok ? "ok" : "bad_signature";
}

// ---- bundles (otel_audit/integrity/bundle.py) ----

const B_REQUIRED = ["audit_path", "checkpoint", "event", "format", "leaf_index", "tree_size"];

// Check `bundle` for the document `shown` (what the page displays; the bundle's own copy
// when omitted). Never throws: every failed check is a reason, as verify_bundle does.
export async function verifyBundle(bundle, ring, shown = undefined) {
  const reasons = [];
  const result = { ok: false, reasons, checkpoint_status: null };
  const reason = (code, message) => reasons.push({ code, message });
  let parsed;
  try {
    requireCrypto();
    if (bundle === null || typeof bundle !== "object") throw new ProofError("bundle must be an object");
    const keys = Object.keys(bundle);
    for (const k of B_REQUIRED) if (!keys.includes(k)) throw new ProofError(`bundle misses ${k}`);
    for (const k of keys) {
      if (!B_REQUIRED.includes(k) && k !== "leaf_hash") throw new ProofError(`unexpected field ${k}`);
    }
    if (bundle.format !== BUNDLE_FORMAT) throw new ProofError(`bundle format ${bundle.format} unknown`);
    if (!Array.isArray(bundle.audit_path) || bundle.audit_path.length > MAX_PATH) {
      throw new ProofError("audit_path must be a list of at most 64 hashes");
    }
    parsed = {
      cp: parseCheckpoint(bundle.checkpoint),
      leaf_index: checkInt(bundle.leaf_index, "leaf_index"),
      tree_size: checkInt(bundle.tree_size, "tree_size"),
      path: bundle.audit_path.map((h, i) => b64decode(h, `audit_path[${i}]`, 32)),
      leaf_hash: "leaf_hash" in bundle ? b64decode(bundle.leaf_hash, "leaf_hash", 32) : null,
    };
  } catch (e) {
    reason("malformed_bundle", e.message);
    return result;
  }
  const cp = parsed.cp;
  Object.assign(result, {
    origin: cp.origin, key_id: cp.key_id, leaf_index: parsed.leaf_index, tree_size: cp.tree_size,
    sequence: cp.sequence, timestamp_ms: cp.timestamp_ms, root_hash: cp.root_b64,
  });
  const status = await verifyCheckpoint(cp, ring);
  result.checkpoint_status = status;
  if (status === "unknown_key") {
    reason("unknown_key", `checkpoint signed by key ${cp.key_id}, which this page does not hold`);
  } else if (status === "bad_signature") {
    reason("bad_signature", `checkpoint signature does not verify with key ${cp.key_id}`);
  } else {
    result.key_source = ring.get(cp.key_id).source;
  }
  if (parsed.tree_size !== cp.tree_size) {
    reason("size_mismatch", `bundle tree_size ${parsed.tree_size} differs from checkpoint ${cp.tree_size}`);
  }
  const doc = shown === undefined ? bundle.event : shown;
  let computed = null;
  try {
    if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
      throw new ProofError("event must be an object");
    }
    computed = await leafHashOfDocument(doc);
    result.computed_leaf = b64encode(computed);
  } catch (e) {
    reason("event_not_canonical", e.message);
  }
  const pathError = async (leaf) => {
    try {
      await verifyInclusion(leaf, parsed.leaf_index, cp.tree_size, parsed.path, cp.root_hash);
      return null;
    } catch (e) {
      return e.message;
    }
  };
  if (computed !== null && parsed.leaf_hash !== null && !equal(computed, parsed.leaf_hash)) {
    const recorded = await pathError(parsed.leaf_hash);
    reason("event_modified", "event document does not hash to the leaf the proof was made for" +
      (recorded === null ? "; the proof holds for the recorded hash, so the event changed after sealing" : ""));
    if (recorded !== null) reason("inclusion_failed", recorded);
  } else if (computed !== null) {
    const err = await pathError(computed);
    if (err !== null) reason("inclusion_failed", err);
  }
  result.ok = reasons.length === 0;
  return result;
}
