'use strict';
/**
 * billing: a small HTTP service that records audit events with the otel-audit helper, as a
 * Node.js service in a checkout that spans several languages would.
 *
 *   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \
 *     node examples/billing.js --listen 127.0.0.1:8090 --inventory-url http://127.0.0.1:8091
 *
 * POST /charge {"user": "u-1", "order": "ord-1", "sku": "sku-7", "bad": false} continues the
 * caller's trace (W3C traceparent), records an invoice.create audit event inside a SERVER
 * span, then (with --inventory-url) reserves the stock: a CLIENT span whose context goes
 * along in the traceparent header. With "bad": true it also records an event that breaks
 * the schema (the helper emits it anyway, the receiver dead-letters it) and asks the
 * inventory to do the same. The answer names every event id and span, the inventory's
 * answer included, so a caller can find them again.
 *
 * Logs and spans leave over OTLP gRPC to OTEL_EXPORTER_OTLP_ENDPOINT (the Collector);
 * OTEL_SERVICE_NAME names the service (default billing). The first line on stdout is
 * {"listening": "http://host:port"}; the service's own log is JSON on stderr. SIGTERM or
 * SIGINT stops it after flushing every span and audit event.
 */

const http = require('node:http');
const { parseArgs } = require('node:util');

const {
  DiagLogLevel, ROOT_CONTEXT, SpanKind, context, diag, propagation, trace,
} = require('@opentelemetry/api');
const { logs } = require('@opentelemetry/api-logs');
const { OTLPLogExporter } = require('@opentelemetry/exporter-logs-otlp-grpc');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-grpc');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { BatchLogRecordProcessor, LoggerProvider } = require('@opentelemetry/sdk-logs');
const { BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');

// The package's own name resolves here too (Node.js self-reference through "exports").
const { AuditLogger, emitStats } = require('otel-audit');

// Short so a caller sees the events within a fraction of a second; the SDKs' defaults
// (1 s for logs, 5 s for spans) suit a busy service better.
const EXPORT_INTERVAL_MS = 200;
const MAX_BODY_BYTES = 1 << 16;

function logLine(level, msg, fields = {}) {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);
}

// The helper reports an invalid event (once per kind of mistake) on the diagnostic logger.
diag.setLogger(
  {
    error: (msg) => logLine('ERROR', 'opentelemetry', { error: msg }),
    warn: (msg) => logLine('WARN', 'opentelemetry', { error: msg }),
    info: () => {},
    debug: () => {},
    verbose: () => {},
  },
  DiagLogLevel.WARN,
);

const { values: args } = parseArgs({
  options: {
    listen: { type: 'string', default: '127.0.0.1:0' },
    'inventory-url': { type: 'string', default: '' },
  },
});

const serviceName = process.env.OTEL_SERVICE_NAME || 'billing';
const resource = resourceFromAttributes({ 'service.name': serviceName });
const tracerProvider = new NodeTracerProvider({
  resource,
  spanProcessors: [
    new BatchSpanProcessor(new OTLPTraceExporter(), { scheduledDelayMillis: EXPORT_INTERVAL_MS }),
  ],
});
// The async-hooks context manager (so the active span follows awaits) and W3C traceparent.
tracerProvider.register();
const loggerProvider = new LoggerProvider({
  resource,
  processors: [
    new BatchLogRecordProcessor({
      exporter: new OTLPLogExporter(),
      scheduledDelayMillis: EXPORT_INTERVAL_MS,
    }),
  ],
});
logs.setGlobalLoggerProvider(loggerProvider);

const tracer = trace.getTracer('billing');
const audit = new AuditLogger(loggerProvider);

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) reject(new Error('body too large'));
      else chunks.push(chunk);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}'));
      } catch (err) {
        reject(err);
      }
    });
    req.on('error', reject);
  });
}

/** POST to the inventory inside a CLIENT span whose context rides in traceparent. */
function reserve(payload) {
  return tracer.startActiveSpan('POST inventory/reserve', { kind: SpanKind.CLIENT }, async (span) => {
    try {
      const headers = { 'content-type': 'application/json' };
      propagation.inject(context.active(), headers);
      const response = await fetch(new URL('/reserve', args['inventory-url']), {
        method: 'POST',
        headers,
        body: JSON.stringify(payload),
      });
      span.setAttribute('http.response.status_code', response.status);
      if (!response.ok) throw new Error(`inventory answered ${response.status}`);
      return await response.json();
    } finally {
      span.end();
    }
  });
}

async function charge(payload, span) {
  const user = String(payload.user || 'u-anon');
  const order = String(payload.order || 'ord-0');
  const ids = span.spanContext();
  const out = {
    service: serviceName,
    trace_id: ids.traceId,
    span_id: ids.spanId,
    event_ids: [],
    invalid_event_ids: [],
    downstream: [],
  };
  out.event_ids.push(
    audit.emit({
      action: 'invoice.create',
      category: 'data_change',
      outcome: 'success',
      actorId: user,
      actorType: 'user',
      resourceType: 'invoice',
      resourceId: `inv-${order}`,
      correlationId: order,
    }),
  );
  if (payload.bad) {
    // Breaks the schema on purpose: the resource an invoice change needs is missing.
    out.invalid_event_ids.push(
      audit.emit({
        action: 'invoice.void',
        category: 'data_change',
        outcome: 'success',
        actorId: user,
        actorType: 'user',
      }),
    );
  }
  if (args['inventory-url']) {
    out.downstream.push(
      await reserve({ order, sku: payload.sku, caller: serviceName, bad: Boolean(payload.bad) }),
    );
  }
  return out;
}

function answer(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') {
    answer(res, 200, { ok: true });
    return;
  }
  if (req.method !== 'POST' || req.url !== '/charge') {
    answer(res, 404, { error: 'no such path' });
    return;
  }
  const parent = propagation.extract(ROOT_CONTEXT, req.headers);
  const attributes = { 'http.request.method': 'POST', 'http.route': '/charge' };
  tracer.startActiveSpan('POST /charge', { kind: SpanKind.SERVER, attributes }, parent, async (span) => {
    let status = 200;
    let body;
    try {
      body = await charge(await readJson(req), span);
    } catch (err) {
      status = 502;
      body = { error: String(err && err.message) };
      logLine('WARN', 'charge failed', { error: body.error });
    }
    span.setAttribute('http.response.status_code', status);
    span.end();
    answer(res, status, body);
  });
});

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  server.close();
  let code = 0;
  for (const provider of [tracerProvider, loggerProvider]) {
    try {
      await provider.shutdown(); // exports what is still buffered
    } catch (err) {
      code = 1;
      logLine('ERROR', 'telemetry not flushed', { error: String(err) });
    }
  }
  const stats = emitStats();
  logLine('INFO', 'billing stopped', {
    signal,
    audit_emitted: stats.emitted,
    audit_invalid: stats.invalid,
    audit_errors: stats.errors,
  });
  process.exit(code);
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

const [host, port] = [args.listen.slice(0, args.listen.lastIndexOf(':')), args.listen.slice(args.listen.lastIndexOf(':') + 1)];
server.listen(Number(port), host, () => {
  const address = server.address();
  process.stdout.write(`${JSON.stringify({ listening: `http://${address.address}:${address.port}` })}\n`);
  logLine('INFO', 'billing listening', { address: `${address.address}:${address.port}` });
});
