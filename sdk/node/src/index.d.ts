// Types of the otel-audit Node.js helper. The schema's parameters and enums are generated
// from the audit schema (schema.generated.d.ts); this file types the helper around them.
import type { Context } from '@opentelemetry/api';
import type { AnyValueMap, LoggerProvider } from '@opentelemetry/api-logs';
import type { AuditFields } from './schema.generated';

export type { ActorType, AuditFields, Category, Outcome } from './schema.generated';

/** One broken rule: the field it concerns, the rule's name and words for people. */
export declare class Violation {
  readonly field: string;
  readonly rule: string;
  readonly message: string;
  toString(): string;
}

/** Thrown in strict mode when an audit event breaks the schema. */
export declare class AuditValidationError extends Error {
  readonly violations: Violation[];
}

/** The schema's parameters plus what the helper itself takes. */
export interface AuditEventParams extends Partial<AuditFields> {
  /** More attributes, kept as sent (not the schema's own names: use the parameters). */
  attributes?: AnyValueMap;
  /** Replaces the generated message. */
  body?: string;
  /** The context whose span the event belongs to (default: the active one). */
  context?: Context;
  /** When it happened: a Date, epoch milliseconds or bigint nanoseconds (default: now). */
  timestamp?: Date | number | bigint;
}

/** A record as the validator reads it. */
export interface AuditRecord {
  attributes: Record<string, unknown>;
  resource?: Record<string, unknown>;
  body?: unknown;
  timeUnixNano?: bigint | number | string;
  observedTimeUnixNano?: bigint | number | string;
}

/** Emits audit events through one LoggerProvider (default: the global one). */
export declare class AuditLogger {
  constructor(loggerProvider?: LoggerProvider);
  /** Record one audit event; returns its event id. Never throws unless strict. */
  emit(params: AuditEventParams): string;
}

/** Record one audit event through the global LoggerProvider; returns its event id. */
export declare function auditEvent(params: AuditEventParams): string;
/** strict=true makes invalid events throw AuditValidationError (tests); null: the env. */
export declare function configure(options?: { strict?: boolean | null }): void;
export declare function isStrict(): boolean;
export declare function emitStats(): { emitted: number; invalid: number; errors: number };
export declare function resetEmitStats(): void;
/** A UUIDv7, strictly increasing within the process. */
export declare function newEventId(unixMs?: number | bigint): string;
/** Every violation of a record against the schema (empty when valid). Never throws. */
export declare function validate(
  record: AuditRecord,
  options?: { nowUnixNano?: bigint },
): Violation[];
export declare function summarize(violations: Violation[], limit?: number): string;
/** The wire attribute of each parameter. */
export declare const PARAM_ATTRIBUTES: Readonly<Record<keyof AuditFields, string>>;
