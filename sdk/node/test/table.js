'use strict';
// The shared validator table (tests/testdata/validate_table.json) as Node.js records.
const fs = require('node:fs');
const path = require('node:path');

const TABLE_PATH = path.resolve(__dirname, '../../../tests/testdata/validate_table.json');

/** WTF-8 bytes (UTF-8 that may encode lone surrogates) to a JS string. */
function fromWtf8(hex) {
  const bytes = Buffer.from(hex, 'hex');
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    let code;
    let n;
    if (b < 0x80) [code, n] = [b, 1];
    else if (b < 0xe0) [code, n] = [b & 0x1f, 2];
    else if (b < 0xf0) [code, n] = [b & 0x0f, 3];
    else [code, n] = [b & 0x07, 4];
    for (let k = 1; k < n; k += 1) code = (code << 6) | (bytes[i + k] & 0x3f);
    out += code > 0xffff ? String.fromCodePoint(code) : String.fromCharCode(code);
    i += n;
  }
  return out;
}

function decode(value) {
  if (Array.isArray(value)) return value.map(decode);
  if (value === null || typeof value !== 'object') return value;
  const [[kind, inner]] = Object.entries(value);
  switch (kind) {
    case '$int':
      return BigInt(inner);
    case '$float':
      return { nan: NaN, inf: Infinity, '-inf': -Infinity }[inner] ?? Number(inner);
    case '$bytes':
      return new Uint8Array(Buffer.from(inner, 'base64'));
    case '$repeat':
      return inner[0].repeat(inner[1]);
    case '$wtf8':
      return fromWtf8(inner);
    case '$map':
      return Object.fromEntries(Object.entries(inner).map(([k, v]) => [k, decode(v)]));
    default:
      throw new Error(`unknown table value ${kind}`);
  }
}

function record(base, c) {
  const bare = Boolean(c.bare);
  const attributes = bare ? {} : { ...base.attributes };
  for (const key of c.drop || []) delete attributes[key];
  for (const [k, v] of Object.entries(c.attributes || {})) attributes[k] = decode(v);
  const resource = c.resource ?? (bare ? {} : base.resource);
  const zero = bare ? '0' : null;
  return {
    attributes,
    resource: Object.fromEntries(Object.entries(resource).map(([k, v]) => [k, decode(v)])),
    timeUnixNano: BigInt(c.time_unix_nano ?? zero ?? base.time_unix_nano),
    observedTimeUnixNano: BigInt(c.observed_time_unix_nano ?? zero ?? base.observed_time_unix_nano),
    body: 'body' in c ? decode(c.body) : bare ? null : base.body,
  };
}

function loadTable() {
  const raw = JSON.parse(fs.readFileSync(TABLE_PATH, 'utf8'));
  return {
    now: BigInt(raw.now_unix_nano),
    cases: raw.cases.map((c) => ({ name: c.name, record: record(raw.base, c), violations: c.violations })),
  };
}

module.exports = { loadTable };
