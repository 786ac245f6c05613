'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');

const { context, trace } = require('@opentelemetry/api');
const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks');
const { BasicTracerProvider } = require('@opentelemetry/sdk-trace-base');

const audit = require('../src/index.js');
const { captureAuditEvents, assertAuditEvent } = require('../src/testing.js');

context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
const tracer = new BasicTracerProvider().getTracer('test');

const UPDATE = {
  action: 'invoice.update',
  category: 'data_change',
  outcome: 'success',
  actorId: 'u-1',
  actorType: 'user',
  resourceType: 'invoice',
  resourceId: 'inv-1',
};
const UUID7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test('an event carries the schema attributes, a UUIDv7, the active span and severity', async () => {
  const capture = captureAuditEvents({ resource: { 'service.name': 'billing' } });
  let ids;
  const id = tracer.startActiveSpan('update', (span) => {
    ids = span.spanContext();
    const eventId = audit.auditEvent({ ...UPDATE, attributes: { 'order.id': 'o-1' } });
    span.end();
    return eventId;
  });
  assert.match(id, UUID7);
  const event = assertAuditEvent(capture.events, {
    action: 'invoice.update',
    actorId: 'u-1',
    eventId: id,
    traceId: ids.traceId,
    spanId: ids.spanId,
    eventName: 'invoice.update',
    severityText: 'INFO',
    'order.id': 'o-1',
  });
  assert.equal(event.resource['service.name'], 'billing');
  assert.equal(event.body, 'user u-1 invoice.update invoice/inv-1: success');
  await capture.stop();
});

test('denied is WARN; the observed time is when the helper saw the event', async () => {
  const capture = captureAuditEvents();
  const anHourAgo = BigInt(Date.now() - 3600_000) * 1000000n;
  audit.auditEvent({ ...UPDATE, outcome: 'denied', timestamp: anHourAgo, actorRoles: ['admin'] });
  const [event] = capture.events;
  assert.equal(event.severityText, 'WARN');
  assert.equal(event.timeUnixNano, anHourAgo);
  assert.ok(event.observedTimeUnixNano > anHourAgo + 3000n * 1000000000n);
  assert.deepEqual(event.get('actorRoles'), ['admin']);
  assert.ok(event.valid, String(event.violations));
  await capture.stop();
});

test('event ids are UUIDv7 and strictly increasing, also within one millisecond', () => {
  const later = 4102444800000; // 2100-01-01: after every id minted so far
  const ids = Array.from({ length: 2000 }, () => audit.newEventId(later));
  for (const id of ids) assert.match(id, UUID7);
  for (let i = 1; i < ids.length; i += 1) assert.ok(ids[i - 1] < ids[i]);
  assert.ok(ids[0].startsWith('03bb2cc3-d800-7'), ids[0]);
});

test('an invalid event is emitted and counted, never thrown', async () => {
  audit.resetEmitStats();
  const capture = captureAuditEvents();
  const id = audit.auditEvent({ ...UPDATE, outcome: 'ok', attributes: { 'audit.actor.id': 'x' } });
  assert.match(id, UUID7);
  const [event] = capture.events;
  assert.deepEqual(
    event.violations.map((v) => [v.field, v.rule]),
    [['audit.outcome', 'enum']],
  );
  assert.equal(audit.emitStats().invalid, 1);
  assert.equal(audit.emitStats().emitted, 1);
  await capture.stop();
});

test('strict mode throws with every violation and emits nothing', async () => {
  const capture = captureAuditEvents();
  audit.configure({ strict: true });
  try {
    assert.throws(
      () => audit.auditEvent({ ...UPDATE, category: 'login', actorId: undefined }),
      (err) =>
        err instanceof audit.AuditValidationError &&
        err.violations.map((v) => v.rule).sort().join() === 'enum,required',
    );
  } finally {
    audit.configure({ strict: null });
  }
  assert.equal(capture.events.length, 0);
  await capture.stop();
});

test('a broken provider or hostile arguments never throw into the service', () => {
  audit.resetEmitStats();
  const broken = {
    getLogger() {
      return {
        emit() {
          throw new Error('exporter exploded');
        },
      };
    },
  };
  assert.match(new audit.AuditLogger(broken).emit(UPDATE), UUID7);
  assert.equal(new audit.AuditLogger({ getLogger: () => { throw new TypeError('x'); } }).emit(UPDATE).length, 36);
  const hostile = { get action() { throw new Error('boom'); } };
  assert.equal(audit.auditEvent(hostile), '');
  assert.equal(audit.emitStats().errors, 3);
});

test('the semconv user attributes are accepted as the actor', async () => {
  const capture = captureAuditEvents();
  const { actorId, actorType, ...rest } = UPDATE; // eslint-disable-line no-unused-vars
  audit.auditEvent({ ...rest, attributes: { 'user.id': 'u-7', 'enduser.id': 'e-7' } });
  assertAuditEvent(capture.events, { action: 'invoice.update', 'user.id': 'u-7' });
  await capture.stop();
});

test('assertAuditEvent says what differs', async () => {
  const capture = captureAuditEvents();
  audit.auditEvent(UPDATE);
  assert.throws(
    () => assertAuditEvent(capture.events, { action: 'invoice.update', actorId: 'u-2' }),
    /actorId: expected "u-2", got "u-1"/,
  );
  await capture.stop();
});
