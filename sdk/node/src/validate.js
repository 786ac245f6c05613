'use strict';
/**
 * Validate one audit record against the schema, as otel_audit.validate does in Python:
 * the same rules, in the same order, with the same fields and messages (the shared table
 * tests/testdata/validate_table.json holds all three to that). The rules' settings and
 * messages come from schema.generated.js; this file only interprets them.
 *
 * A record: { attributes, resource, body, timeUnixNano, observedTimeUnixNano }, where
 * attribute values are what the OpenTelemetry JS Logs API takes (string, number, bigint,
 * boolean, Uint8Array, arrays, plain objects, null) and times are bigint nanoseconds.
 */

const S = require('./schema.generated.js');

const CONTROL = new RegExp(S.controlPattern);
const KEY_BAD = new RegExp(S.keyBadPattern);
// What Python's str.isspace() calls blank, as a table over the UTF-16 code units up to the
// largest such character (all of them are in the Basic Multilingual Plane).
const BLANK = new Uint8Array(Math.max(...S.blankChars) + 1);
for (const code of S.blankChars) BLANK[code] = 1;
const FIELDS = S.fields.map((f) => ({
  ...f,
  enumSet: new Set(f.enum),
  regex: f.pattern ? new RegExp(`^(?:${f.pattern})$`) : null,
}));
const BY_ATTRIBUTE = new Map(FIELDS.map((f) => [f.attribute, f]));
const RESOURCE_KNOWN = new Set(S.resourceFields.map((f) => f.attribute));
const RESOURCE_CATEGORIES = new Set(S.resourceRequiredCategories);
const MIN_TIME = BigInt(S.limits.minTimeUnixNano);
const MAX_FUTURE_NS = BigInt(S.limits.maxFutureS) * 1000000000n;
const NAMES = S.valueTypeNames;
const MAX_VIOLATIONS = 50;

/** One broken rule: the field it concerns, the rule's name and words for people. */
class Violation {
  constructor(field, rule, message) {
    this.field = field;
    this.rule = rule;
    this.message = message;
  }

  toString() {
    return `${this.field}: ${this.message}`;
  }
}

function message(name, values = {}) {
  return S.messages[name].replace(/\{(\w+)\}/g, (_, key) => String(values[key]));
}

/** The OTLP value kind of a JS value, or '' for what no AnyValue holds. */
function kindOf(value) {
  if (value === null || value === undefined) return 'empty';
  switch (typeof value) {
    case 'string':
      return 'string';
    case 'boolean':
      return 'bool';
    case 'bigint':
      return 'int';
    case 'number':
      return Number.isInteger(value) ? 'int' : 'double';
    default:
  }
  if (Array.isArray(value)) return 'array';
  if (value instanceof Uint8Array) return 'bytes';
  if (Object.getPrototypeOf(value) === Object.prototype || value instanceof Map) return 'kvlist';
  return '';
}

function typeName(value) {
  const kind = kindOf(value);
  if (kind) return NAMES[kind];
  if (typeof value === 'object') return (value.constructor && value.constructor.name) || 'object';
  return typeof value;
}

function entries(value) {
  return value instanceof Map ? [...value.entries()] : Object.entries(value);
}

function utf8Length(text) {
  return Buffer.byteLength(text, 'utf8');
}

function isBlank(text) {
  // A surrogate is never blank, so code units decide as well as code points.
  for (let i = 0; i < text.length; i += 1) {
    if (BLANK[text.charCodeAt(i)] !== 1) return false;
  }
  return true;
}

function badUnicode(text) {
  return !text.isWellFormed();
}

function printable(code) {
  // nonPrintable is sorted ranges: binary search.
  const ranges = S.nonPrintable;
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (code < ranges[mid][0]) hi = mid - 1;
    else if (code > ranges[mid][1]) lo = mid + 1;
    else return false;
  }
  return true;
}

function hex(code, width) {
  return code.toString(16).padStart(width, '0');
}

/** Python's repr() of a string, which the messages quote values with. */
function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (ch === quote || ch === '\\') out += `\\${ch}`;
    else if (ch === '\t') out += '\\t';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (code < 0x20 || code === 0x7f) out += `\\x${hex(code, 2)}`;
    else if (code < 0x7f || printable(code)) out += ch;
    else if (code <= 0xff) out += `\\x${hex(code, 2)}`;
    else if (code <= 0xffff) out += `\\u${hex(code, 4)}`;
    else out += `\\U${hex(code, 8)}`;
  }
  return out + quote;
}

/** The first n code points of text (Python's text[:n]). */
function head(text, n) {
  if (text.length <= n) return text;
  const points = Array.from(text);
  return points.length <= n ? text : points.slice(0, n).join('');
}

function codePointLength(text) {
  let n = 0;
  for (const _ of text) n += 1; // eslint-disable-line no-unused-vars
  return n;
}

function shown(text) {
  return pyRepr(head(text, 64) + (codePointLength(text) > 64 ? '...' : ''));
}

function checkString(f, value, out, name, required) {
  if (typeof value !== 'string') {
    out.push(new Violation(name, 'type', message('not_string', { type: typeName(value) })));
    return null;
  }
  if (value === '' || isBlank(value)) {
    if (required === 'always' || required === 'derived') {
      out.push(new Violation(name, 'required', message('empty')));
    }
    return null;
  }
  if (badUnicode(value)) {
    out.push(new Violation(name, 'encoding', message('lone_surrogate')));
    return null;
  }
  if (f.enum.length) {
    if (!f.enumSet.has(value)) {
      const values = f.enum.join(', ');
      out.push(new Violation(name, 'enum', message('enum', { value: shown(value), values })));
    }
    return value;
  }
  if (f.oversize === 'reject') {
    const size = utf8Length(value);
    if (size > f.maxBytes) {
      out.push(new Violation(name, 'max_bytes', message('max_bytes', { size, limit: f.maxBytes })));
      return null;
    }
    if (f.type === 'keyword' && CONTROL.test(value)) {
      out.push(new Violation(name, 'control_chars', message('control_chars')));
      return null;
    }
  }
  if (f.regex && !f.regex.test(value)) {
    const text = message('pattern', { value: shown(value), pattern: f.pattern });
    out.push(new Violation(name, 'pattern', text));
  }
  return value;
}

function checkField(f, value, name, out) {
  if (!f.array) return checkString(f, value, out, name, f.required);
  if (!Array.isArray(value)) {
    out.push(new Violation(name, 'type', message('not_string_array', { type: typeName(value) })));
    return null;
  }
  const limit = S.limits.maxArrayItems;
  if (value.length > limit) {
    const text = message('too_many_items', { count: value.length, limit });
    out.push(new Violation(name, 'too_many', text));
    return null;
  }
  const before = out.length;
  for (const item of value) {
    checkString(f, item, out, name, 'always');
    if (out.length > before) return null;
  }
  return value;
}

function checkKey(key, where, out) {
  if (typeof key !== 'string') {
    out.push(new Violation(where, 'attribute_key', message('key_not_string')));
    return false;
  }
  if (badUnicode(key)) {
    out.push(new Violation(where, 'encoding', message('key_encoding')));
    return false;
  }
  const limit = S.limits.maxAttributeKeyBytes;
  if (key === '' || utf8Length(key) > limit || KEY_BAD.test(key)) {
    const cut = head(key, 64);
    const at = key ? `${where}.${cut}` : where;
    out.push(new Violation(at, 'attribute_key', message('key', { key: pyRepr(cut), limit })));
    return false;
  }
  return true;
}

function checkValue(value, where, depth, out) {
  const limits = S.limits;
  const kind = kindOf(value);
  if (kind === 'string') {
    if (badUnicode(value)) out.push(new Violation(where, 'encoding', message('lone_surrogate')));
    return;
  }
  if ((kind === 'kvlist' || kind === 'array') && depth > limits.maxValueDepth) {
    out.push(new Violation(where, 'max_depth', message('depth', { limit: limits.maxValueDepth })));
    return;
  }
  if (kind === 'kvlist') {
    const items = entries(value);
    if (items.length > limits.maxArrayItems) {
      const text = message('too_many_keys', { count: items.length, limit: limits.maxArrayItems });
      out.push(new Violation(where, 'too_many', text));
      return;
    }
    for (const [k, v] of items) {
      if (checkKey(k, where, out)) checkValue(v, `${where}.${k}`, depth + 1, out);
      if (out.length > MAX_VIOLATIONS) return;
    }
  } else if (kind === 'array') {
    if (value.length > limits.maxArrayItems) {
      const text = message('too_many_items', { count: value.length, limit: limits.maxArrayItems });
      out.push(new Violation(where, 'too_many', text));
      return;
    }
    for (const item of value) {
      checkValue(item, where, depth + 1, out);
      if (out.length > MAX_VIOLATIONS) return;
    }
  } else if (!kind) {
    out.push(new Violation(where, 'type', message('unsupported_type', { type: typeName(value) })));
  }
}

function toBigInt(value) {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' && Number.isInteger(value)) return BigInt(value);
  if (typeof value === 'string' && /^-?[0-9]+$/.test(value)) return BigInt(value);
  return null;
}

function checkTime(record, nowNs, out) {
  const time = toBigInt(record.timeUnixNano ?? 0n);
  const observed = toBigInt(record.observedTimeUnixNano ?? 0n);
  const ts = time || observed;
  if (ts === null) {
    out.push(new Violation('time_unix_nano', 'type', message('time_type')));
    return;
  }
  if (ts === 0n) {
    out.push(new Violation('time_unix_nano', 'required', message('time_missing')));
    return;
  }
  if (ts < MIN_TIME) {
    const text = message('time_before', { min_date: S.limits.minDate });
    out.push(new Violation('time_unix_nano', 'time', text));
    return;
  }
  if (ts > nowNs + MAX_FUTURE_NS) {
    const text = message('time_future', { seconds: S.limits.maxFutureS });
    out.push(new Violation('time_unix_nano', 'time', text));
  }
}

function has(attrs, key) {
  return Object.prototype.hasOwnProperty.call(attrs, key);
}

// Resources whose attributes passed every rule. A provider's resource is immutable (the
// OpenTelemetry resource model), so the helper checks each one once, not on every event;
// a resource with violations is checked again every time, so that each event reports them.
const validResources = new WeakSet();

function checkResource(resource, out) {
  if (validResources.has(resource)) return;
  const before = out.length;
  checkResourceRules(resource, out);
  // Past MAX_VIOLATIONS the value checks stop early, so only a full check proves validity.
  const complete = before <= MAX_VIOLATIONS;
  if (complete && out.length === before && typeof resource === 'object' && resource !== null) {
    validResources.add(resource);
  }
}

function checkResourceRules(resource, out) {
  if (kindOf(resource) !== 'kvlist') {
    out.push(new Violation('resource', 'type', message('resource_not_mapping')));
    return;
  }
  const items = entries(resource);
  const values = new Map(items);
  const limits = S.limits;
  if (items.length > limits.maxResourceAttributes) {
    const limit = limits.maxResourceAttributes;
    const text = message('resource_too_many', { count: items.length, limit });
    out.push(new Violation('resource', 'too_many', text));
  }
  for (const rf of S.resourceFields) {
    const rv = values.get(rf.attribute);
    const where = `resource.${rf.attribute}`;
    if (rv === undefined || rv === null) {
      if (rf.required === 'always') {
        out.push(new Violation(where, 'required', message('resource_required')));
      }
    } else if (typeof rv !== 'string') {
      out.push(new Violation(where, 'type', message('not_string', { type: typeName(rv) })));
    } else if (rf.required === 'always' && (rv === '' || isBlank(rv))) {
      out.push(new Violation(where, 'required', message('empty')));
    } else if (utf8Length(rv) > rf.maxBytes) {
      const text = message('max_bytes', { size: utf8Length(rv), limit: rf.maxBytes });
      out.push(new Violation(where, 'max_bytes', text));
    } else if (CONTROL.test(rv)) {
      out.push(new Violation(where, 'control_chars', message('control_chars')));
    } else if (badUnicode(rv)) {
      out.push(new Violation(where, 'encoding', message('resource_encoding')));
    }
  }
  for (const [key, value] of items) {
    if (RESOURCE_KNOWN.has(key)) continue;
    if (checkKey(key, 'resource', out)) checkValue(value, `resource.${key}`, 1, out);
  }
}

function validateRecord(record, nowNs) {
  const out = [];
  const attrs = record.attributes;
  if (kindOf(attrs) !== 'kvlist' || attrs instanceof Map) {
    return [new Violation('attributes', 'type', message('attributes_not_mapping'))];
  }
  if (!has(attrs, S.marker)) {
    const text = message('not_audit_event', { marker: S.marker });
    return [new Violation(S.marker, 'not_audit_event', text)];
  }
  const keys = Object.keys(attrs);
  const limit = S.limits.maxAttributes;
  if (keys.length > limit) {
    const text = message('attributes_too_many', { count: keys.length, limit });
    return [new Violation('attributes', 'too_many', text)];
  }
  // Allocated only when an alias stands in for a schema attribute (rare).
  let usedAliases = null;
  let aliased = null;
  let category;
  for (const f of FIELDS) {
    let value;
    if (has(attrs, f.attribute)) {
      value = checkField(f, attrs[f.attribute], f.attribute, out);
    } else {
      const alias = f.aliases.length ? f.aliases.find((a) => has(attrs, a)) : undefined;
      if (alias !== undefined) {
        (usedAliases ??= new Set()).add(alias);
        (aliased ??= new Set()).add(f.attribute);
        value = checkField(f, attrs[alias], alias, out);
      } else if (
        f.required === 'always' &&
        !(f.aliasDefault.length && aliased !== null && aliased.has(f.aliasDefault[0]))
      ) {
        out.push(new Violation(f.attribute, 'required', message('required')));
      }
    }
    if (f.attribute === S.categoryAttribute) category = value;
  }
  if (RESOURCE_CATEGORIES.has(category)) {
    for (const name of S.resourceCategoryAttributes) {
      const given = attrs[name];
      if (
        given === undefined ||
        given === null ||
        (typeof given === 'string' && (given === '' || isBlank(given)))
      ) {
        out.push(new Violation(name, 'required', message('required_for_category', { category })));
      }
    }
  }
  for (const key of keys) {
    if (BY_ATTRIBUTE.has(key) || (usedAliases !== null && usedAliases.has(key))) continue;
    if (checkKey(key, 'attributes', out)) checkValue(attrs[key], key, 1, out);
    if (out.length > MAX_VIOLATIONS) break;
  }
  checkResource(record.resource, out);
  if (record.body !== null && record.body !== undefined) checkValue(record.body, 'body', 1, out);
  checkTime(record, nowNs, out);
  return out;
}

function nowNanos() {
  return BigInt(Date.now()) * 1000000n;
}

/**
 * Every violation of `record` against the schema (empty when valid). Never throws.
 * @param {object} record
 * @param {{nowUnixNano?: bigint}} [options]
 */
function validate(record, options = {}) {
  try {
    return validateRecord(record || {}, options.nowUnixNano ?? nowNanos());
  } catch (err) {
    if (err instanceof RangeError) {
      return [new Violation('attributes', 'max_depth', message('too_deep_to_inspect'))];
    }
    const type = (err && err.constructor && err.constructor.name) || typeof err;
    return [new Violation('record', 'type', message('uninspectable', { type }))];
  }
}

/** A short message naming the first `limit` violations. */
function summarize(violations, limit = 3) {
  const text = violations.slice(0, limit).map(String).join('; ');
  const more = violations.length - limit;
  return more > 0 ? `${text} (+${more} more)` : text;
}

module.exports = { Violation, validate, summarize, message, kindOf, pyRepr };
