// Package audittest captures a service's audit events in its own tests, like
// otel_audit.testing in Python:
//
//	capture := audittest.New(map[string]string{"service.name": "billing"})
//	logger := otelaudit.NewLogger(capture.Provider(), capture.Resource()...)
//	updateInvoice(ctx, logger, "inv-1")
//	capture.Assert(t, audittest.Want{"action": "invoice.update", "actor_id": "u-1"})
//
// The events are what the OpenTelemetry SDK itself produced (a synchronous processor in
// front of an in-memory exporter), so trace and span ids, resource, severity and event
// name are the SDK's, and each carries the schema's verdict.
package audittest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"

	otelaudit "github.com/otel-audit/otel-audit/sdk/go"
)

// Event is one captured audit event.
type Event struct {
	Attributes   map[string]attribute.Value
	Resource     map[string]string
	Body         string
	EventName    string
	SeverityText string
	TraceID      string
	SpanID       string
	Record       otelaudit.Record
	Violations   []otelaudit.Violation
}

// Get returns a wire attribute, or one of trace_id, span_id, event_name, severity_text,
// body, as a string ("" when absent; arrays joined by ",").
func (e Event) Get(key string) string {
	switch key {
	case "trace_id":
		return e.TraceID
	case "span_id":
		return e.SpanID
	case "event_name":
		return e.EventName
	case "severity_text":
		return e.SeverityText
	case "body":
		return e.Body
	}
	v, ok := e.Attributes[key]
	if !ok {
		return ""
	}
	if v.Type() == attribute.STRINGSLICE {
		return strings.Join(v.AsStringSlice(), ",")
	}
	return v.Emit()
}

// Want is what an event must hold: wire attributes or the record keys of Event.Get.
type Want map[string]string

// Capture records every audit record its provider's loggers emit.
type Capture struct {
	mu       sync.Mutex
	events   []Event
	provider *sdklog.LoggerProvider
	resource *resource.Resource
}

// New returns a capture whose provider has a resource with attributes res.
func New(res map[string]string) *Capture {
	kvs := make([]attribute.KeyValue, 0, len(res))
	for k, v := range res {
		kvs = append(kvs, attribute.String(k, v))
	}
	c := &Capture{resource: resource.NewSchemaless(kvs...)}
	c.provider = sdklog.NewLoggerProvider(
		sdklog.WithResource(c.resource),
		sdklog.WithProcessor(sdklog.NewSimpleProcessor(exporter{c})),
	)
	return c
}

// Provider is the LoggerProvider to emit through (otelaudit.NewLogger, or the global one).
func (c *Capture) Provider() *sdklog.LoggerProvider { return c.provider }

// Resource is the provider's resource as otelaudit.NewLogger takes it.
func (c *Capture) Resource() []attribute.KeyValue { return c.resource.Attributes() }

// Events returns the audit events captured so far.
func (c *Capture) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

type exporter struct{ c *Capture }

func (e exporter) Export(_ context.Context, records []sdklog.Record) error {
	for _, r := range records {
		ev := Event{
			Attributes:   map[string]attribute.Value{},
			Resource:     map[string]string{},
			Body:         r.Body().AsString(),
			EventName:    r.EventName(),
			SeverityText: r.SeverityText(),
		}
		if r.TraceID().IsValid() {
			ev.TraceID = r.TraceID().String()
		}
		if r.SpanID().IsValid() {
			ev.SpanID = r.SpanID().String()
		}
		var attrs []attribute.KeyValue
		r.WalkAttributes(func(kv attribute.KeyValue) bool {
			attrs = append(attrs, kv)
			ev.Attributes[string(kv.Key)] = kv.Value
			return true
		})
		if _, audit := ev.Attributes["audit.action"]; !audit {
			continue
		}
		var res []attribute.KeyValue
		if rs := r.Resource(); rs != nil {
			res = rs.Attributes()
			for _, kv := range res {
				ev.Resource[string(kv.Key)] = kv.Value.Emit()
			}
		}
		ev.Record = otelaudit.Record{
			Attributes: attrs, Resource: res, Body: r.Body(),
			TimeUnixNano: r.Timestamp().UnixNano(), ObservedTimeUnixNano: r.ObservedTimestamp().UnixNano(),
		}
		ev.Violations = otelaudit.Validate(ev.Record, r.ObservedTimestamp().UnixNano())
		e.c.mu.Lock()
		e.c.events = append(e.c.events, ev)
		e.c.mu.Unlock()
	}
	return nil
}

func (exporter) Shutdown(context.Context) error   { return nil }
func (exporter) ForceFlush(context.Context) error { return nil }

// Find returns the first valid event holding want, or an error naming the closest
// event's differences.
func (c *Capture) Find(want Want) (Event, error) {
	events := c.Events()
	if len(events) == 0 {
		return Event{}, fmt.Errorf("no audit events were captured; want %v", map[string]string(want))
	}
	bestScore, best, bestDiff := -1, Event{}, []string(nil)
	for _, ev := range events {
		var diff []string
		for k, v := range want {
			if got := ev.Get(k); got != v {
				diff = append(diff, fmt.Sprintf("  %s: want %q, got %q", k, v, got))
			}
		}
		if len(diff) == 0 && len(ev.Violations) == 0 {
			return ev, nil
		}
		score := 2 * len(diff)
		if len(ev.Violations) > 0 {
			score++
		}
		if bestScore < 0 || score < bestScore {
			bestScore, best, bestDiff = score, ev, diff
		}
	}
	sort.Strings(bestDiff)
	lines := []string{fmt.Sprintf("no captured audit event matches (%d captured); closest:", len(events))}
	lines = append(lines, bestDiff...)
	for _, v := range best.Violations {
		lines = append(lines, fmt.Sprintf("    - %s [%s]: %s", v.Field, v.Rule, v.Message))
	}
	return Event{}, fmt.Errorf("%s", strings.Join(lines, "\n"))
}

// Assert fails t unless a valid captured event holds want; it returns that event.
func (c *Capture) Assert(t testing.TB, want Want) Event {
	t.Helper()
	ev, err := c.Find(want)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}
