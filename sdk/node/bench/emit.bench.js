'use strict';
// The helper's cost per event on top of the SDK's own emit: the same record emitted through
// the same SDK logger (sdk-logs, a processor that drops records) with and without the
// helper. `node bench/emit.bench.js [--quick]`; prints one JSON line.
//
// The two are measured in alternating rounds, each timed in CPU time of this process
// (process.cpuUsage: time the machine spent on other work does not count), and each
// figure is the median over the rounds, so a busy machine skews both sides alike.
const { LoggerProvider } = require('@opentelemetry/sdk-logs');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { AuditLogger } = require('../src/index.js');

const quick = process.argv.includes('--quick');
const ROUNDS = quick ? 15 : 60;
const PER_ROUND = quick ? 2000 : 5000;
const dropping = { onEmit() {}, forceFlush: async () => {}, shutdown: async () => {} };
const provider = new LoggerProvider({
  resource: resourceFromAttributes({ 'service.name': 'billing' }),
  processors: [dropping],
});
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
  raw.emit({
    timestamp: Date.now(), severityNumber: 9, severityText: 'INFO',
    body: 'user u-1842 invoice.update invoice/inv-2026-0042: success', attributes,
    eventName: 'invoice.update',
  });
}
function withHelper() {
  helper.emit(params);
}

/** Microseconds of CPU per call of fn over one round. */
function round(fn) {
  const start = process.cpuUsage();
  for (let i = 0; i < PER_ROUND; i += 1) fn();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / PER_ROUND;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// Warm-up: both paths optimised by the JIT before anything counts.
for (let i = 0; i < 3; i += 1) {
  round(sdkOnly);
  round(withHelper);
}
const base = [];
const full = [];
for (let i = 0; i < ROUNDS; i += 1) {
  // Alternate the order so neither side always runs right after a collection.
  if (i % 2) {
    base.push(round(sdkOnly));
    full.push(round(withHelper));
  } else {
    full.push(round(withHelper));
    base.push(round(sdkOnly));
  }
}
const b = median(base);
const f = median(full);
console.log(JSON.stringify({
  language: 'node',
  events: ROUNDS * PER_ROUND,
  rounds: ROUNDS,
  sdk_emit_us: +b.toFixed(3),
  helper_emit_us: +f.toFixed(3),
  helper_cost_us: +(f - b).toFixed(3),
  ratio: +(f / b).toFixed(2),
}));
