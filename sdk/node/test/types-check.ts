// Compiled with tsc --noEmit by `npm test`: the published types accept what the helper
// documents and refuse a category the schema does not have.
import { auditEvent, AuditLogger, configure, type Category } from '../src/index';
import { assertAuditEvent, captureAuditEvents } from '../src/testing';

const category: Category = 'data_change';
const id: string = auditEvent({
  action: 'invoice.update',
  category,
  outcome: 'success',
  actorId: 'u-1',
  actorType: 'user',
  actorRoles: ['billing.admin'],
  attributes: { 'order.id': 'o-1' },
  timestamp: new Date(),
});
new AuditLogger().emit({ action: 'user.login', category: 'authentication', outcome: 'denied' });
configure({ strict: true });
const capture = captureAuditEvents();
assertAuditEvent(capture.events, { action: 'invoice.update' });
// @ts-expect-error: not a category of the schema
auditEvent({ action: 'a.b', category: 'login' });
void id;
