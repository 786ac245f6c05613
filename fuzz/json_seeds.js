'use strict';
/**
 * OTLP/JSON seed requests for the fuzz corpus, printed on stdout as a JSON array of
 * {"path": "/v1/logs" | "/v1/traces", "body": "<request body>"}.
 *
 * Audit events are emitted through the otel-audit helper (sdk/node) and spans through the
 * OpenTelemetry JS SDK, kept by its in-memory exporters, then serialized by the SDK's own
 * JSON serializer (@opentelemetry/otlp-transformer): the bodies its OTLP/HTTP JSON
 * exporters send. Run from sdk/node (its node_modules): `node ../../fuzz/json_seeds.js`.
 */

// Resolved from sdk/node (the working directory), whose node_modules hold the SDK.
const { createRequire } = require('node:module');
const path = require('node:path');

const load = createRequire(path.resolve('package.json'));
const { SpanStatusCode, context, trace } = load('@opentelemetry/api');
const { JsonLogsSerializer, JsonTraceSerializer } = load('@opentelemetry/otlp-transformer');
const { resourceFromAttributes } = load('@opentelemetry/resources');
const {
  InMemoryLogRecordExporter, LoggerProvider, SimpleLogRecordProcessor,
} = load('@opentelemetry/sdk-logs');
const {
  BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor,
} = load('@opentelemetry/sdk-trace-base');
const { AsyncLocalStorageContextManager } = load('@opentelemetry/context-async-hooks');

const { AuditLogger } = load('otel-audit');

const decoder = new TextDecoder();

async function main() {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  const resource = resourceFromAttributes({
    'service.name': 'billing', 'service.version': '2.0.1', 'host.cores': 2,
  });
  const spans = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({
    resource, spanProcessors: [new SimpleSpanProcessor(spans)],
  });
  const tracer = tracerProvider.getTracer('billing.http', '2.0.1');
  const logsOut = new InMemoryLogRecordExporter();
  const loggerProvider = new LoggerProvider({
    resource, processors: [new SimpleLogRecordProcessor({ exporter: logsOut })],
  });
  const audit = new AuditLogger(loggerProvider);

  const root = tracer.startSpan('POST /charge', { attributes: { 'http.route': '/charge' } });
  await context.with(trace.setSpan(context.active(), root), async () => {
    audit.emit({
      action: 'invoice.create', category: 'data_change', outcome: 'success',
      actorId: 'u-1', actorType: 'user', resourceType: 'invoice', resourceId: 'inv-7',
      clientAddress: '2001:db8::1', userAgent: 'node-fetch',
      attributes: { 'invoice.total': 99.5, 'invoice.items': ['a', 'b'], paid: true, n: 3 },
    });
    const child = tracer.startSpan('inventory.reserve', { links: [{ context: root.spanContext() }] });
    child.addEvent('reserved', { sku: 'sku-7' });
    child.setStatus({ code: SpanStatusCode.ERROR, message: 'out of stock' });
    child.end();
  });
  root.end();
  audit.emit({ action: 'Bad Action', category: 'unknown', outcome: 'perhaps' });
  audit.emit({
    action: 'user.login', category: 'authentication', outcome: 'failure',
    actorId: 'ü-👤', actorType: 'user', errorType: 'BadPassword', reason: 'x'.repeat(200),
    attributes: { nested: { deep: { list: [1, 2.5, null, 'z'] } }, bytes: new Uint8Array([0, 255]) },
  });

  const records = logsOut.getFinishedLogRecords();
  const finished = spans.getFinishedSpans();
  const out = [
    { path: '/v1/logs', body: decoder.decode(JsonLogsSerializer.serializeRequest(records)) },
    { path: '/v1/logs', body: decoder.decode(JsonLogsSerializer.serializeRequest(records.slice(0, 1))) },
    { path: '/v1/traces', body: decoder.decode(JsonTraceSerializer.serializeRequest(finished)) },
    { path: '/v1/traces', body: decoder.decode(JsonTraceSerializer.serializeRequest(finished.slice(0, 1))) },
  ];
  process.stdout.write(JSON.stringify(out));
  await loggerProvider.shutdown();
  await tracerProvider.shutdown();
}

main().catch((err) => { console.error(err); process.exit(1); });
