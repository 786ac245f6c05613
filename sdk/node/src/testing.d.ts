// Types of otel-audit/testing: capture and assert a service's audit events in its tests.
import type { LoggerProvider } from '@opentelemetry/sdk-logs';
import type { Violation } from './index';

export declare class CapturedAuditEvent {
  readonly attributes: Record<string, unknown>;
  readonly resource: Record<string, unknown>;
  readonly body: unknown;
  readonly eventName: string;
  readonly severityText: string;
  readonly severityNumber: number;
  readonly traceId: string;
  readonly spanId: string;
  readonly timeUnixNano: bigint;
  readonly observedTimeUnixNano: bigint;
  readonly violations: Violation[];
  readonly valid: boolean;
  /** A schema parameter (actorId), record field (traceId) or attribute ('order.id'). */
  get(key: string): unknown;
}

export interface AuditCapture {
  readonly events: CapturedAuditEvent[];
  clear(): void;
  stop(): Promise<void>;
}

export declare function captureAuditEvents(options?: {
  loggerProvider?: LoggerProvider;
  resource?: Record<string, string>;
}): AuditCapture;

export declare function assertAuditEvent(
  captured: Iterable<CapturedAuditEvent>,
  expected: Record<string, unknown>,
  options?: { allowViolations?: boolean },
): CapturedAuditEvent;
