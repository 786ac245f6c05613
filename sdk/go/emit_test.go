package otelaudit_test

import (
	"context"
	"regexp"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	otelaudit "github.com/otel-audit/otel-audit/sdk/go"
	"github.com/otel-audit/otel-audit/sdk/go/audittest"
)

var uuid7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func update() otelaudit.Event {
	return otelaudit.Event{Fields: otelaudit.Fields{
		Action: "invoice.update", Category: otelaudit.CategoryDataChange,
		Outcome: otelaudit.OutcomeSuccess, ActorID: "u-1", ActorType: otelaudit.ActorTypeUser,
		ResourceType: "invoice", ResourceID: "inv-1",
	}}
}

func TestAnEventCarriesTheSchemaTheSpanAndAUUIDv7(t *testing.T) {
	capture := audittest.New(map[string]string{"service.name": "billing"})
	logger := otelaudit.NewLogger(capture.Provider(), capture.Resource()...)
	ctx, span := sdktrace.NewTracerProvider().Tracer("test").Start(context.Background(), "update")
	id, err := logger.Emit(ctx, update())
	span.End()
	if err != nil || !uuid7.MatchString(id) {
		t.Fatalf("id %q err %v", id, err)
	}
	ev := capture.Assert(t, audittest.Want{
		"audit.action": "invoice.update", "audit.event.id": id, "event_name": "invoice.update",
		"trace_id": span.SpanContext().TraceID().String(), "span_id": span.SpanContext().SpanID().String(),
		"severity_text": "INFO", "body": "user u-1 invoice.update invoice/inv-1: success",
	})
	if ev.Resource["service.name"] != "billing" {
		t.Fatal(ev.Resource)
	}
}

func TestObservedTimeIsWhenTheHelperSawTheEvent(t *testing.T) {
	capture := audittest.New(map[string]string{"service.name": "billing"})
	logger := otelaudit.NewLogger(capture.Provider(), capture.Resource()...)
	e := update()
	e.Time = time.Now().Add(-time.Hour)
	e.ActorRoles = []string{"admin"}
	e.Outcome = otelaudit.OutcomeDenied
	if _, err := logger.Emit(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	ev := capture.Assert(t, audittest.Want{"audit.actor.roles": "admin", "severity_text": "WARN"})
	if ev.Record.ObservedTimeUnixNano-ev.Record.TimeUnixNano < int64(50*time.Minute) {
		t.Fatalf("observed %d, time %d", ev.Record.ObservedTimeUnixNano, ev.Record.TimeUnixNano)
	}
}

func TestIdsAreStrictlyIncreasingWithinAMillisecond(t *testing.T) {
	later := int64(4102444800000)
	prev := ""
	for i := 0; i < 5000; i++ {
		id := otelaudit.NewEventID(later)
		if !uuid7.MatchString(id) || id <= prev {
			t.Fatalf("%q after %q", id, prev)
		}
		prev = id
	}
}

func TestInvalidEventsAreEmittedAndCountedOrFailInStrictMode(t *testing.T) {
	capture := audittest.New(map[string]string{"service.name": "billing"})
	logger := otelaudit.NewLogger(capture.Provider(), capture.Resource()...)
	otelaudit.ResetEmitStats()
	e := update()
	e.Outcome = "ok"
	if _, err := logger.Emit(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if s := otelaudit.EmitStats(); s.Invalid != 1 || s.Emitted != 1 {
		t.Fatal(s)
	}
	if evs := capture.Events(); len(evs) != 1 || evs[0].Violations[0].Rule != "enum" {
		t.Fatal(evs)
	}
	otelaudit.SetStrict(true)
	defer otelaudit.ResetStrict()
	_, err := logger.Emit(context.Background(), e)
	if verr, ok := err.(*otelaudit.ValidationError); !ok || verr.Violations[0].Field != "audit.outcome" {
		t.Fatalf("%v", err)
	}
	if len(capture.Events()) != 1 {
		t.Fatal("strict mode emitted the invalid event")
	}
}

func TestABrokenProviderNeverPanicsIntoTheService(t *testing.T) {
	otelaudit.ResetEmitStats()
	logger := otelaudit.NewLogger(brokenProvider{})
	id, err := logger.Emit(context.Background(), update())
	if err != nil || !uuid7.MatchString(id) || otelaudit.EmitStats().Errors != 1 {
		t.Fatal(id, err, otelaudit.EmitStats())
	}
}
