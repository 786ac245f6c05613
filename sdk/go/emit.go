// Package otelaudit records audit events from a Go service as OpenTelemetry log records.
//
//	otelaudit.Emit(ctx, otelaudit.Event{Fields: otelaudit.Fields{
//		Action: "invoice.update", Category: otelaudit.CategoryDataChange,
//		Outcome: otelaudit.OutcomeSuccess, ActorID: userID, ActorType: otelaudit.ActorTypeUser,
//		ResourceType: "invoice", ResourceID: invoiceID,
//	}})
//
// The event goes through the application's LoggerProvider (the global one, or the one
// given to NewLogger) with ctx, so the SDK attaches the trace and span of ctx. The helper
// mints a UUIDv7 event id, sets the schema's attributes (Fields is generated from the
// schema), a short body, the event name (the action) and the severity the schema gives the
// outcome. Every event is validated with the same rules and messages as the Python helper;
// an invalid one is still emitted (the receiver keeps it in its dead-letter index) and
// counted. Nothing here panics or returns an error into the service, unless strict mode is
// on (SetStrict(true) or OTEL_AUDIT_STRICT=1, for tests): then Emit returns a
// *ValidationError and emits nothing.
package otelaudit

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/log/global"
)

// ScopeName and ScopeVersion name the instrumentation scope of the audit records.
const (
	ScopeName    = "otel_audit"
	ScopeVersion = "0.1.0"
)

// Event is one audit event: the schema's fields and what the helper itself takes.
type Event struct {
	Fields
	// Attributes are more attributes, kept as sent (not the schema's own names).
	Attributes []attribute.KeyValue
	// Body replaces the generated message.
	Body string
	// Time is when it happened (default: now).
	Time time.Time
}

// ValidationError is returned in strict mode when an event breaks the schema.
type ValidationError struct{ Violations []Violation }

func (e *ValidationError) Error() string {
	lines := make([]string, 0, len(e.Violations))
	for _, v := range e.Violations {
		lines = append(lines, fmt.Sprintf("  - %s [%s]: %s", v.Field, v.Rule, v.Message))
	}
	return fmt.Sprintf("invalid audit event (%d violations):\n%s", len(e.Violations), strings.Join(lines, "\n"))
}

var strictSetting atomic.Int32 // 0: environment, 1: on, 2: off

// SetStrict makes invalid events fail (true) or pass (false); ResetStrict returns to
// the OTEL_AUDIT_STRICT environment variable.
func SetStrict(on bool) {
	if on {
		strictSetting.Store(1)
	} else {
		strictSetting.Store(2)
	}
}

// ResetStrict returns to the OTEL_AUDIT_STRICT environment variable.
func ResetStrict() { strictSetting.Store(0) }

// IsStrict says whether invalid events fail.
func IsStrict() bool {
	switch strictSetting.Load() {
	case 1:
		return true
	case 2:
		return false
	}
	switch strings.ToLower(strings.TrimSpace(os.Getenv("OTEL_AUDIT_STRICT"))) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// Stats are counts since start: Emitted (handed to the SDK), Invalid (failed validation;
// still emitted unless strict) and Errors (the SDK panicked: the event is lost).
type Stats struct{ Emitted, Invalid, Errors int64 }

var emitted, invalid, errorsSeen atomic.Int64

// EmitStats returns the counts since start.
func EmitStats() Stats {
	return Stats{Emitted: emitted.Load(), Invalid: invalid.Load(), Errors: errorsSeen.Load()}
}

// ResetEmitStats zeroes the counts (for tests).
func ResetEmitStats() { emitted.Store(0); invalid.Store(0); errorsSeen.Store(0) }

var (
	reportedMu sync.Mutex
	reported   = map[string]bool{}
)

func firstTime(key string) bool {
	reportedMu.Lock()
	defer reportedMu.Unlock()
	if reported[key] || len(reported) >= 1024 {
		return false
	}
	reported[key] = true
	return true
}

func reportInvalid(action string, violations []Violation) {
	invalid.Add(1)
	key := "invalid|" + head(action, 64)
	for i, v := range violations {
		if i == 8 {
			break
		}
		key += "|" + head(v.Field, 64) + "/" + v.Rule
	}
	if firstTime(key) {
		otel.Handle(fmt.Errorf("invalid audit event %s (emitted anyway; the receiver will reject it): %s",
			head(action, 64), Summarize(violations, 8)))
	}
}

func reportError(err any) {
	errorsSeen.Add(1)
	if firstTime(fmt.Sprintf("error|%T", err)) {
		otel.Handle(fmt.Errorf("audit event could not be emitted: %v", err))
	}
}

// --- event ids ------------------------------------------------------------------------------

var (
	idMu     sync.Mutex
	lastMs   int64  = -1
	lastHigh uint16 // rand_a (12 bits)
	lastLow  uint64 // rand_b (62 bits)

	// Random bytes come from a pool refilled from crypto/rand (under idMu): one read per
	// few hundred ids instead of two per id.
	pool   [4096]byte
	poolAt = len(pool)
)

// random returns n (at most 8) random bytes as the high bytes of a uint64; idMu is held.
func random(n int) uint64 {
	if poolAt+n > len(pool) {
		if _, err := rand.Read(pool[:]); err != nil {
			// crypto/rand does not fail on supported platforms; the time still varies.
			binary.BigEndian.PutUint64(pool[:8], uint64(time.Now().UnixNano()))
		}
		poolAt = 0
	}
	var b [8]byte
	copy(b[:n], pool[poolAt:poolAt+n])
	poolAt += n
	return binary.BigEndian.Uint64(b[:])
}

// NewEventID returns a UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, RFC
// variant, 74 random bits. Ids minted in this process are strictly increasing (RFC 9562
// section 6.2, method 2), as the Python helper's are.
func NewEventID(unixMs int64) string {
	idMu.Lock()
	ms := unixMs
	var high uint16
	var low uint64
	if ms > lastMs {
		// The top random bit starts clear so a burst in one millisecond rarely overflows.
		high = uint16(random(2)>>48) & 0x7ff
		low = random(8) >> 2
	} else {
		ms = lastMs
		high, low = lastHigh, lastLow+1+(random(3)>>40)
		if low >= 1<<62 {
			low -= 1 << 62
			high++
			if high >= 1<<12 {
				ms++
				high = uint16(random(2)>>48) & 0x7ff
				low = random(8) >> 2
			}
		}
	}
	lastMs, lastHigh, lastLow = ms, high, low
	idMu.Unlock()
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], uint64(ms)<<16|0x7000|uint64(high))
	binary.BigEndian.PutUint64(b[8:16], 0b10<<62|low)
	var text [36]byte
	hex.Encode(text[0:8], b[0:4])
	text[8] = '-'
	hex.Encode(text[9:13], b[4:6])
	text[13] = '-'
	hex.Encode(text[14:18], b[6:8])
	text[18] = '-'
	hex.Encode(text[19:23], b[8:10])
	text[23] = '-'
	hex.Encode(text[24:36], b[10:16])
	return string(text[:])
}

// --- the helper -----------------------------------------------------------------------------

// Logger emits audit events through one OpenTelemetry LoggerProvider.
type Logger struct {
	provider log.LoggerProvider // nil: the global one, looked up on every call
	resource []attribute.KeyValue
	// resourceValid: the resource passed every rule once; resources are immutable, so it
	// is not checked again (one with violations is, on every event).
	resourceValid bool
	bound         atomic.Pointer[boundLogger]
}

// boundLogger is the log.Logger a provider gave the helper, kept for the next event.
type boundLogger struct {
	provider log.LoggerProvider
	logger   log.Logger
}

// NewLogger returns a Logger bound to provider (nil: the global provider). resource, when
// given, is the provider's resource, checked like the receiver checks it (service.name).
func NewLogger(provider log.LoggerProvider, resource ...attribute.KeyValue) *Logger {
	return &Logger{provider: provider, resource: resource,
		resourceValid: resource != nil && resourceValid(resource)}
}

// logger is the audit scope's log.Logger of the current provider. It is asked for once per
// provider; the global provider is looked up every time, since it may be replaced.
func (l *Logger) logger() log.Logger {
	provider := l.provider
	if provider == nil {
		provider = global.GetLoggerProvider()
	}
	if b := l.bound.Load(); b != nil && sameProvider(b.provider, provider) {
		return b.logger
	}
	logger := provider.Logger(ScopeName, log.WithInstrumentationVersion(ScopeVersion))
	l.bound.Store(&boundLogger{provider: provider, logger: logger})
	return logger
}

// sameProvider compares providers that are pointers (as the SDK's and the global one are);
// other kinds might panic on ==, so they are never taken as the same.
func sameProvider(a, b log.LoggerProvider) bool {
	ta := reflect.TypeOf(a)
	return ta != nil && ta == reflect.TypeOf(b) && ta.Kind() == reflect.Pointer && a == b
}

var defaultLogger = &Logger{}

// Emit records one audit event through the global LoggerProvider (see Logger.Emit).
func Emit(ctx context.Context, e Event) (string, error) { return defaultLogger.Emit(ctx, e) }

const bodyPartChars = 128

func part(s string) string {
	if s == "" {
		return "?"
	}
	if len(s) <= bodyPartChars {
		return s
	}
	return head(s, bodyPartChars) + "…"
}

func defaultBody(f *Fields) string {
	// One concatenation each way: one allocation per body.
	if f.ResourceType != "" || f.ResourceID != "" {
		return part(f.ActorType) + " " + part(f.ActorID) + " " + part(f.Action) + " " +
			part(f.ResourceType) + "/" + part(f.ResourceID) + ": " + part(f.Outcome)
	}
	return part(f.ActorType) + " " + part(f.ActorID) + " " + part(f.Action) + ": " + part(f.Outcome)
}

// Emit records one audit event with ctx's span; it returns the event id. The error is
// non-nil only in strict mode, for an invalid event (a *ValidationError).
func (l *Logger) Emit(ctx context.Context, e Event) (id string, err error) {
	defer func() {
		if r := recover(); r != nil {
			reportError(r)
			err = nil
		}
	}()
	now := time.Now()
	fields := e.Fields
	if fields.EventID == "" {
		fields.EventID = NewEventID(now.UnixMilli())
	}
	id = fields.EventID
	attrs := make([]attribute.KeyValue, 0, len(e.Attributes)+12)
	var violations []Violation
	for _, kv := range e.Attributes {
		if f := schema.byAttribute[string(kv.Key)]; f != nil {
			violations = append(violations, Violation{string(kv.Key), "attribute_key",
				message("use_parameter", "param", f.GoName)})
			continue
		}
		attrs = append(attrs, kv)
	}
	attrs = fields.attributes(attrs)
	ts := e.Time
	if ts.IsZero() {
		ts = now
	}
	body := e.Body
	if body == "" {
		body = defaultBody(&fields)
	}
	resource := l.resource
	found := validate(Record{
		Attributes: attrs, Resource: resource, Body: attribute.StringValue(body),
		TimeUnixNano: ts.UnixNano(), ObservedTimeUnixNano: now.UnixNano(),
	}, now.UnixNano(), l.resourceValid)
	if resource == nil {
		// The provider's resource is not known here: the receiver checks service.name.
		kept := found[:0]
		for _, v := range found {
			if !strings.HasPrefix(v.Field, "resource") {
				kept = append(kept, v)
			}
		}
		found = kept
	}
	violations = append(violations, found...)
	if len(violations) > 0 {
		if IsStrict() {
			return id, &ValidationError{Violations: violations}
		}
		reportInvalid(fields.Action, violations)
	}
	severity, ok := schema.Severity[fields.Outcome]
	if !ok {
		severity = schema.Severity["unknown"]
	}
	var rec log.Record
	rec.SetTimestamp(ts)
	rec.SetObservedTimestamp(now)
	rec.SetSeverity(log.Severity(severity))
	if log.Severity(severity) >= log.SeverityWarn {
		rec.SetSeverityText("WARN")
	} else {
		rec.SetSeverityText("INFO")
	}
	rec.SetEventName(fields.Action)
	rec.SetBody(attribute.StringValue(body))
	rec.AddAttributes(attrs...)
	l.logger().Emit(ctx, rec)
	emitted.Add(1)
	return id, nil
}
