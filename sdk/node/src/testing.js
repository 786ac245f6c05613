'use strict';
/**
 * Assert a service's audit events in its own tests, like otel_audit.testing in Python:
 *
 *   const { captureAuditEvents, assertAuditEvent } = require('otel-audit/testing');
 *   const capture = captureAuditEvents();
 *   updateInvoice('inv-1', { user: 'u-1' });
 *   assertAuditEvent(capture.events, { action: 'invoice.update', actorId: 'u-1' });
 *   await capture.stop();
 *
 * The events are what the OpenTelemetry SDK itself produced (an in-memory exporter behind
 * a synchronous processor), so trace and span ids, resource, severity and event name are
 * the SDK's, and each captured event carries the schema's verdict.
 */

const {
  InMemoryLogRecordExporter,
  LoggerProvider,
  SimpleLogRecordProcessor,
} = require('@opentelemetry/sdk-logs');
const { resourceFromAttributes } = require('@opentelemetry/resources');

const S = require('./schema.generated.js');
const { validate } = require('./validate.js');
const { _setProviderOverride } = require('./index.js');

const PARAM_ATTRIBUTES = new Map(S.fields.map((f) => [f.param, f.attribute]));
const DEFAULT_RESOURCE = { 'service.name': 'otel-audit-test' };

/** A synchronous processor: sdk-logs 0.223+ takes { exporter }, earlier ones the exporter. */
function simpleProcessor(exporter) {
  const processor = new SimpleLogRecordProcessor({ exporter });
  return processor._exporter === exporter ? processor : new SimpleLogRecordProcessor(exporter);
}

function nanos(hr) {
  return BigInt(hr[0]) * 1000000000n + BigInt(hr[1]);
}

/** One captured audit event: the record as the SDK produced it and its violations. */
class CapturedAuditEvent {
  constructor(item) {
    const span = item.spanContext;
    this.attributes = { ...item.attributes };
    this.resource = { ...item.resource.attributes };
    this.body = item.body;
    this.eventName = item.eventName || '';
    this.severityText = item.severityText || '';
    this.severityNumber = item.severityNumber || 0;
    this.traceId = span ? span.traceId : '';
    this.spanId = span ? span.spanId : '';
    this.timeUnixNano = nanos(item.hrTime);
    this.observedTimeUnixNano = nanos(item.hrTimeObserved);
    this.violations = validate({
      attributes: this.attributes,
      resource: this.resource,
      body: this.body,
      timeUnixNano: this.timeUnixNano,
      observedTimeUnixNano: this.observedTimeUnixNano,
    });
  }

  /** True when the schema found nothing wrong. */
  get valid() {
    return this.violations.length === 0;
  }

  /** A schema parameter (actorId), record field (traceId) or attribute ('order.id'). */
  get(key) {
    if (PARAM_ATTRIBUTES.has(key)) return this.attributes[PARAM_ATTRIBUTES.get(key)];
    if (Object.prototype.hasOwnProperty.call(this, key) && key !== 'attributes') return this[key];
    return this.attributes[key];
  }
}

/**
 * Capture the audit events emitted from now until stop(). Without a provider, a fresh SDK
 * LoggerProvider (resource `resource`, default service.name=otel-audit-test) receives what
 * auditEvent() emits; with one (the one your AuditLogger uses), a processor is added to it.
 */
function captureAuditEvents({ loggerProvider, resource } = {}) {
  const exporter = new InMemoryLogRecordExporter();
  const processor = simpleProcessor(exporter);
  let provider = loggerProvider;
  let previous = null;
  let open = true;
  if (!provider) {
    provider = new LoggerProvider({
      resource: resourceFromAttributes(resource || DEFAULT_RESOURCE),
      processors: [processor],
    });
    previous = _setProviderOverride(provider);
  } else {
    // Providers of sdk-logs 0.2xx take processors at construction only.
    const shared = provider._sharedState;
    if (!shared || !shared.registeredLogRecordProcessors) {
      throw new Error('captureAuditEvents: this LoggerProvider does not accept processors');
    }
    shared.registeredLogRecordProcessors.push(processor);
  }
  let seen = 0;
  const events = [];
  const capture = {
    /** The audit events captured so far (other log records are left out). */
    get events() {
      const items = exporter.getFinishedLogRecords();
      for (const item of items.slice(seen)) {
        if (open && item.attributes && S.marker in item.attributes) {
          events.push(new CapturedAuditEvent(item));
        }
      }
      seen = items.length;
      return [...events];
    },
    clear() {
      exporter.reset();
      seen = 0;
      events.length = 0;
    },
    async stop() {
      capture.events; // eslint-disable-line no-unused-expressions
      open = false;
      if (!loggerProvider) {
        _setProviderOverride(previous);
        await provider.shutdown();
      }
    },
  };
  return capture;
}

function differences(event, expected) {
  const diff = {};
  for (const [key, value] of Object.entries(expected)) {
    const got = event.get(key);
    if (JSON.stringify(got) !== JSON.stringify(value)) diff[key] = got;
  }
  return diff;
}

/**
 * Assert that one captured event matches `expected` (schema parameters, record fields or
 * attribute names); returns the first that does. The event must also be valid unless
 * allowViolations. On failure the message shows the closest event's differences.
 */
function assertAuditEvent(captured, expected, { allowViolations = false } = {}) {
  const events = [...captured];
  if (!events.length) {
    throw new Error(`no audit events were captured; expected ${JSON.stringify(expected)}`);
  }
  let best = null;
  for (const event of events) {
    const diff = differences(event, expected);
    if (!Object.keys(diff).length && (allowViolations || event.valid)) return event;
    let score = 2 * Object.keys(diff).length + ('action' in diff ? 2 : 0);
    score += allowViolations || event.valid ? 0 : 1;
    if (best === null || score < best[0]) best = [score, event, diff];
  }
  const [, event, diff] = best;
  const lines = [`no captured audit event matches (${events.length} captured); closest:`];
  for (const [key, got] of Object.entries(diff)) {
    lines.push(`  ${key}: expected ${JSON.stringify(expected[key])}, got ${JSON.stringify(got)}`);
  }
  if (!(allowViolations || event.valid)) {
    lines.push('  it breaks the schema:');
    for (const v of event.violations) lines.push(`    - ${v.field} [${v.rule}]: ${v.message}`);
  }
  const actions = events.slice(0, 20).map((e) => JSON.stringify(e.get('action')));
  lines.push(`captured actions: ${actions.join(', ')}`);
  throw new Error(lines.join('\n'));
}

module.exports = { CapturedAuditEvent, assertAuditEvent, captureAuditEvents };
