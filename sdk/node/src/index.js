'use strict';
/**
 * Record an audit event from a Node.js service, in one call:
 *
 *   const { auditEvent } = require('otel-audit');
 *   auditEvent({ action: 'invoice.update', category: 'data_change', outcome: 'success',
 *                actorId: user.id, actorType: 'user', resourceType: 'invoice', resourceId: id });
 *
 * The event is a log record emitted through the application's OpenTelemetry LoggerProvider
 * (the global one, or the one given to AuditLogger), while the caller's context is active,
 * so the SDK attaches the trace and span ids. The helper mints a UUIDv7 event id, sets the
 * schema's attributes (their names come from the schema: schema.generated.js), a short
 * body, the event name (the action) and the severity the schema gives the outcome.
 *
 * Every call is validated locally with the same rules and messages as the Python helper.
 * An invalid event is still emitted (the receiver keeps it in its dead-letter index) and
 * reported once per kind of mistake on the diagnostic logger and in emitStats(). Nothing
 * here throws into the service - unless strict mode is on (configure({ strict: true }) or
 * OTEL_AUDIT_STRICT=1, for tests), where an invalid call throws AuditValidationError and
 * is not emitted.
 */

const crypto = require('node:crypto');
const { context: otelContext, diag } = require('@opentelemetry/api');
const { logs, SeverityNumber } = require('@opentelemetry/api-logs');

const S = require('./schema.generated.js');
const { Violation, validate, message, summarize } = require('./validate.js');

const SCOPE_NAME = 'otel_audit';
const SCOPE_VERSION = require('../package.json').version;
const PARAM_ATTRIBUTES = Object.freeze(
  Object.fromEntries(S.fields.map((f) => [f.param, f.attribute])),
);
const ATTRIBUTE_PARAMS = new Map(S.fields.map((f) => [f.attribute, f.param]));
const FIELDS = S.fields;
const BODY_PART_CHARS = 128;

class AuditValidationError extends Error {
  /** Thrown in strict mode when an audit event breaks the schema; lists every violation. */
  constructor(violations) {
    const lines = violations.map((v) => `  - ${v.field} [${v.rule}]: ${v.message}`).join('\n');
    super(`invalid audit event (${violations.length} violations):\n${lines}`);
    this.name = 'AuditValidationError';
    this.violations = violations;
  }
}

// --- configuration and counters -----------------------------------------------------------

let strictSetting = null;

/** Process-wide options: strict=true makes invalid events throw; null returns to the env. */
function configure({ strict = null } = {}) {
  strictSetting = strict;
}

function isStrict() {
  if (strictSetting !== null) return strictSetting;
  const env = (process.env.OTEL_AUDIT_STRICT || '').trim().toLowerCase();
  return ['1', 'true', 'yes', 'on'].includes(env);
}

const stats = { emitted: 0, invalid: 0, errors: 0 };

/** Counts since start: emitted (handed to the SDK), invalid (still emitted unless strict),
 * errors (the SDK threw: the event is lost). */
function emitStats() {
  return { ...stats };
}

function resetEmitStats() {
  for (const key of Object.keys(stats)) stats[key] = 0;
}

const reported = new Set();
const MAX_REPORTED = 1024;

function firstTime(key) {
  if (reported.has(key) || reported.size >= MAX_REPORTED) return false;
  reported.add(key);
  return true;
}

function reportInvalid(action, violations) {
  stats.invalid += 1;
  const shownAction = typeof action === 'string' ? action.slice(0, 64) : String(action);
  const key = `invalid|${shownAction}|${violations
    .slice(0, 8)
    .map((v) => `${v.field.slice(0, 64)}/${v.rule}`)
    .join(',')}`;
  if (firstTime(key)) {
    diag.warn(
      `invalid audit event ${shownAction} (emitted anyway; the receiver will reject it): ` +
        summarize(violations, 8),
    );
  }
}

function reportError(err) {
  stats.errors += 1;
  const name = (err && err.name) || typeof err;
  if (firstTime(`error|${name}`)) diag.warn(`audit event could not be emitted: ${err}`);
}

// --- event ids ------------------------------------------------------------------------------

// The 74 random bits of the last id, as three counters that doubles hold exactly:
// rand_a (12 bits) and rand_b's high 30 and low 32 bits.
const TWO_32 = 2 ** 32;
const TWO_30 = 2 ** 30;
const TWO_12 = 2 ** 12;
const TWO_48 = 2 ** 48;
let lastMs = -1;
let lastA = 0;
let lastBHigh = 0;
let lastBLow = 0;

// Random bytes come from a pool refilled from the CSPRNG (as crypto.randomUUID does):
// one randomFillSync per few hundred ids instead of one system call per id.
const POOL_BYTES = 4096;
const pool = Buffer.alloc(POOL_BYTES);
let poolAt = POOL_BYTES;

function random32() {
  if (poolAt + 4 > POOL_BYTES) {
    crypto.randomFillSync(pool);
    poolAt = 0;
  }
  const value = pool.readUInt32BE(poolAt);
  poolAt += 4;
  return value;
}

function freshRandom() {
  // The top random bit starts clear so a burst in one millisecond rarely overflows.
  lastA = random32() & 0x7ff;
  lastBHigh = random32() & (TWO_30 - 1);
  lastBLow = random32();
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/**
 * A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, RFC variant, 74 random bits.
 * Ids minted in this process are strictly increasing (RFC 9562 section 6.2, method 2), as
 * the Python helper's are.
 */
function newEventId(unixMs) {
  let ms = unixMs === undefined || unixMs === null ? Date.now() : Number(unixMs);
  ms = Math.floor(ms) % TWO_48;
  if (ms > lastMs) {
    freshRandom();
  } else {
    // Same (or an earlier) millisecond: the last random value plus 1..2^24, carried up.
    ms = lastMs;
    lastBLow += 1 + (random32() & 0xffffff);
    if (lastBLow >= TWO_32) {
      lastBLow -= TWO_32;
      lastBHigh += 1;
      if (lastBHigh >= TWO_30) {
        lastBHigh -= TWO_30;
        lastA += 1;
        if (lastA >= TWO_12) {
          ms += 1;
          freshRandom();
        }
      }
    }
  }
  lastMs = ms;
  // Byte by byte: 48-bit ms | 0111 rand_a (12) | 10 rand_b (62).
  const msHigh = Math.floor(ms / TWO_32);
  const msLow = ms - msHigh * TWO_32;
  const a = lastA;
  const bh = lastBHigh;
  const bl = lastBLow;
  return (
    HEX[msHigh >>> 8] + HEX[msHigh & 0xff] + HEX[msLow >>> 24] + HEX[(msLow >>> 16) & 0xff] +
    '-' + HEX[(msLow >>> 8) & 0xff] + HEX[msLow & 0xff] +
    '-' + HEX[0x70 | (a >>> 8)] + HEX[a & 0xff] +
    '-' + HEX[0x80 | (bh >>> 24)] + HEX[(bh >>> 16) & 0xff] +
    '-' + HEX[(bh >>> 8) & 0xff] + HEX[bh & 0xff] +
    HEX[bl >>> 24] + HEX[(bl >>> 16) & 0xff] + HEX[(bl >>> 8) & 0xff] + HEX[bl & 0xff]
  );
}

// --- the helper -----------------------------------------------------------------------------

function part(value) {
  if (typeof value !== 'string') return value === undefined || value === null ? '?' : typeof value;
  return value.length <= BODY_PART_CHARS ? value : `${value.slice(0, BODY_PART_CHARS)}…`;
}

function defaultBody(attrs) {
  let text = `${part(attrs['audit.actor.type'])} ${part(attrs[S.actorIdAttribute])} `;
  text += part(attrs[S.actionAttribute]);
  const rtype = attrs['audit.resource.type'];
  const rid = attrs['audit.resource.id'];
  if (rtype !== undefined || rid !== undefined) text += ` ${part(rtype)}/${part(rid)}`;
  return `${text}: ${part(attrs[S.outcomeAttribute])}`;
}

function severityOf(outcome) {
  const number = S.severity[outcome] ?? S.severity.unknown;
  return [number, number >= SeverityNumber.WARN ? 'WARN' : 'INFO'];
}

function nanos(value) {
  if (typeof value === 'bigint') return value;
  if (value instanceof Date) return BigInt(value.getTime()) * 1000000n;
  if (typeof value === 'number') return BigInt(Math.round(value)) * 1000000n; // ms, as the API
  return null;
}

function hrTime(ns) {
  return [Number(ns / 1000000000n), Number(ns % 1000000000n)];
}

/** The resource attributes of an SDK provider, when it shows them (undefined otherwise). */
function providerResource(provider) {
  const shared = provider && provider._sharedState;
  const attributes = shared && shared.resource && shared.resource.attributes;
  return attributes && typeof attributes === 'object' ? attributes : undefined;
}

let providerOverride = null;

/** Emits audit events through one OpenTelemetry LoggerProvider (default: the global one,
 * looked up on every call). */
class AuditLogger {
  constructor(loggerProvider) {
    this.provider = loggerProvider || null;
    this.cachedProvider = null;
    this.logger = null;
  }

  resolve() {
    const provider = this.provider || providerOverride || logs.getLoggerProvider();
    if (provider !== this.cachedProvider || this.logger === null) {
      this.logger = provider.getLogger(SCOPE_NAME, SCOPE_VERSION);
      this.cachedProvider = provider;
    }
    return [provider, this.logger];
  }

  /**
   * Record one audit event; returns its event id ('' when the arguments could not be read).
   * `params` holds the schema's parameters (action, category, outcome, actorId, actorType,
   * ...: see AuditFields), and optionally `attributes` (more attributes, any keys), `body`,
   * `context` (default: the active one) and `timestamp` (a Date, epoch ms or bigint ns).
   */
  emit(params) {
    let attrs;
    let violations;
    let body;
    let severity;
    let eventName;
    const nowNs = BigInt(Date.now()) * 1000000n;
    let ts;
    try {
      attrs = {};
      violations = [];
      const extra = params.attributes || {};
      for (const key of Object.keys(extra)) {
        if (ATTRIBUTE_PARAMS.has(key)) {
          const text = message('use_parameter', { param: ATTRIBUTE_PARAMS.get(key) });
          violations.push(new Violation(key, 'attribute_key', text));
          continue;
        }
        attrs[key] = extra[key];
      }
      for (const f of FIELDS) {
        const value = params[f.param];
        if (value !== undefined && value !== null) {
          attrs[f.attribute] = f.array && Array.isArray(value) ? [...value] : value;
        }
      }
      if (attrs[S.eventIdAttribute] === undefined) {
        attrs[S.eventIdAttribute] = newEventId(nowNs / 1000000n);
      }
      body = params.body ?? defaultBody(attrs);
      severity = severityOf(attrs[S.outcomeAttribute]);
      const action = attrs[S.actionAttribute];
      eventName = typeof action === 'string' ? action : '';
      ts = params.timestamp === undefined ? nowNs : nanos(params.timestamp);
    } catch (err) {
      reportError(err);
      return '';
    }
    const eventId = String(attrs[S.eventIdAttribute] ?? '');
    let provider;
    let logger;
    try {
      [provider, logger] = this.resolve();
    } catch (err) {
      reportError(err);
      return eventId;
    }
    const resource = providerResource(provider);
    let found = validate(
      {
        attributes: attrs,
        resource: resource || {},
        body,
        timeUnixNano: ts ?? 0n,
        observedTimeUnixNano: nowNs,
      },
      { nowUnixNano: nowNs },
    );
    if (resource === undefined) {
      // The provider hides its resource: the receiver checks service.name instead.
      found = found.filter((v) => !v.field.startsWith('resource'));
    }
    violations.push(...found);
    if (violations.length) {
      if (isStrict()) throw new AuditValidationError(violations);
      reportInvalid(attrs[S.actionAttribute], violations);
    }
    try {
      logger.emit({
        timestamp: ts === null ? undefined : hrTime(ts),
        observedTimestamp: hrTime(nowNs),
        severityNumber: severity[0],
        severityText: severity[1],
        body,
        attributes: attrs,
        eventName,
        context: params.context || otelContext.active(),
      });
    } catch (err) {
      reportError(err);
      return eventId;
    }
    stats.emitted += 1;
    return eventId;
  }
}

const defaultLogger = new AuditLogger();

/** Record one audit event through the global LoggerProvider (see AuditLogger.emit). */
function auditEvent(params) {
  return defaultLogger.emit(params);
}

function setProviderOverride(provider) {
  const previous = providerOverride;
  providerOverride = provider;
  return previous;
}

module.exports = {
  AuditLogger,
  AuditValidationError,
  PARAM_ATTRIBUTES,
  Violation,
  auditEvent,
  configure,
  emitStats,
  isStrict,
  newEventId,
  resetEmitStats,
  summarize,
  validate,
  schema: S,
  _setProviderOverride: setProviderOverride,
};
