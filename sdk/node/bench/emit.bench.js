'use strict';
// The helper's cost per event on top of the SDK's own emit: the same record emitted through
// the same SDK logger (sdk-logs, a processor that drops records) with and without the
// helper. `node bench/emit.bench.js [--quick]`; prints one JSON line.
const { logs } = require('@opentelemetry/api-logs');
const { LoggerProvider } = require('@opentelemetry/sdk-logs');
const { AuditLogger } = require('../src/index.js');

const quick = process.argv.includes('--quick');
const N = quick ? 20000 : 200000;
const dropping = { onEmit() {}, forceFlush: async () => {}, shutdown: async () => {} };
const provider = new LoggerProvider({ processors: [dropping] });
const raw = provider.getLogger('bench');
const helper = new AuditLogger(provider);
const params = {
  action: 'invoice.update', category: 'data_change', outcome: 'success', actorId: 'u-1842',
  actorType: 'user', resourceType: 'invoice', resourceId: 'inv-2026-0042',
  attributes: { 'http.route': '/invoices/{id}' },
};
const attributes = {
  'audit.action': 'invoice.update', 'audit.category': 'data_change', 'audit.outcome': 'success',
  'audit.actor.id': 'u-1842', 'audit.actor.type': 'user', 'audit.resource.type': 'invoice',
  'audit.resource.id': 'inv-2026-0042', 'audit.event.id': '019b7b3a-5c00-7abc-8def-0123456789ab',
  'http.route': '/invoices/{id}',
};
function sdkOnly() {
  raw.emit({ timestamp: Date.now(), severityNumber: 9, severityText: 'INFO', body: 'user u-1842 invoice.update invoice/inv-2026-0042: success', attributes, eventName: 'invoice.update' });
}
function time(fn) {
  for (let i = 0; i < N / 10; i += 1) fn();
  const start = process.hrtime.bigint();
  for (let i = 0; i < N; i += 1) fn();
  return Number(process.hrtime.bigint() - start) / N / 1000;
}
const base = time(sdkOnly);
const full = time(() => helper.emit(params));
void logs;
console.log(JSON.stringify({ language: 'node', events: N, sdk_emit_us: +base.toFixed(3), helper_emit_us: +full.toFixed(3), helper_cost_us: +(full - base).toFixed(3), ratio: +(full / base).toFixed(2) }));
