// Generated from otel_audit/schema/audit_event.v1.json by sdk/generate.py. Do not edit.

/** The kind of event. Also stored as ECS event.category (mapped list). */
export type Category = "authentication" | "authorization" | "permission_change" | "data_access" | "data_change" | "configuration" | "integration" | "user_action" | "system";
/** How it ended. Also stored as ECS event.outcome (denied maps to failure there). */
export type Outcome = "success" | "failure" | "denied" | "unknown";
/** What kind of identity the actor is. A service actor is also stored as ECS service.origin.*, an agent as agent.*. When absent and the actor id came from user.id or enduser.id, the actor is a user. */
export type ActorType = "user" | "service" | "system" | "agent";

/** The schema's parameters of one audit event (wire attributes in the docs). */
export interface AuditFields {
  /** `audit.action`: What was done: a dotted lowercase verb phrase, e.g. invoice.update, user.login. */
  action: string;
  /** `audit.category`: The kind of event. Also stored as ECS event.category (mapped list). */
  category: Category;
  /** `audit.outcome`: How it ended. Also stored as ECS event.outcome (denied maps to failure there). */
  outcome: Outcome;
  /** `audit.actor.id`: Who did it: a stable identifier of the user, service, system or agent. When absent, the OpenTelemetry attribute user.id (or the older enduser.id) supplies it. */
  actorId: string;
  /** `audit.actor.type`: What kind of identity the actor is. A service actor is also stored as ECS service.origin.*, an agent as agent.*. When absent and the actor id came from user.id or enduser.id, the actor is a user. */
  actorType: ActorType;
  /** `audit.actor.name`: Display name of the actor. When absent, the OpenTelemetry attribute user.name supplies it. */
  actorName?: string;
  /** `audit.actor.roles`: Roles the actor held when acting: an array of strings. When absent, the OpenTelemetry attribute user.roles supplies it. */
  actorRoles?: string[];
  /** `audit.resource.type`: Type of the affected resource. Required for data_access, data_change, permission_change and configuration. */
  resourceType?: string;
  /** `audit.resource.id`: Identifier of the affected resource. Required for data_access, data_change, permission_change and configuration. */
  resourceId?: string;
  /** `audit.event.id`: The emitter's UUIDv7 (RFC 9562: version 7, RFC variant); any other form is refused, because the id's embedded time chooses the one daily index that keeps the event unique across days. When absent the receiver derives a deterministic UUID from the record's content so that retries still deduplicate. */
  eventId?: string;
  /** `audit.correlation_id`: Ties work that spans several traces. Defaults to the trace id. */
  correlationId?: string;
  /** `audit.reason`: Why it happened or why it was denied, in words (ECS keyword; searched as words in event.reason.text). */
  reason?: string;
  /** `audit.tenant.id`: Tenant the event belongs to (ECS organization.id). */
  tenantId?: string;
  /** `audit.target.user.id`: The user whose permissions, roles or account the event changed (ECS user.target.id), mostly for permission_change. */
  targetUserId?: string;
  /** `audit.target.user.name`: Display name of the target user (ECS user.target.name). */
  targetUserName?: string;
  /** `client.address`: Address of the client that made the request, as the service saw it. Marked untrusted; copied to client.ip and source.ip when it is an IP address. */
  clientAddress?: string;
  /** `user_agent.original`: The client's User-Agent header. Marked untrusted. */
  userAgent?: string;
  /** `session.id`: Session the action belongs to. */
  sessionId?: string;
  /** `error.type`: Class of error for failure outcomes. */
  errorType?: string;
}

/** The wire attribute of each parameter. */
export declare const PARAM_ATTRIBUTES: {
  readonly action: "audit.action";
  readonly category: "audit.category";
  readonly outcome: "audit.outcome";
  readonly actorId: "audit.actor.id";
  readonly actorType: "audit.actor.type";
  readonly actorName: "audit.actor.name";
  readonly actorRoles: "audit.actor.roles";
  readonly resourceType: "audit.resource.type";
  readonly resourceId: "audit.resource.id";
  readonly eventId: "audit.event.id";
  readonly correlationId: "audit.correlation_id";
  readonly reason: "audit.reason";
  readonly tenantId: "audit.tenant.id";
  readonly targetUserId: "audit.target.user.id";
  readonly targetUserName: "audit.target.user.name";
  readonly clientAddress: "client.address";
  readonly userAgent: "user_agent.original";
  readonly sessionId: "session.id";
  readonly errorType: "error.type";
};
