package otelaudit_test

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"

	otelaudit "github.com/otel-audit/otel-audit/sdk/go"
)

// The helper's cost per event on top of the SDK's own emit: the same record through the
// same SDK logger (a processor that drops records), with and without the helper.
// go test -bench . -benchtime 20000x (quick) or -benchtime 2s.

type dropping struct{}

func (dropping) OnEmit(context.Context, *sdklog.Record) error           { return nil }
func (dropping) Shutdown(context.Context) error                         { return nil }
func (dropping) ForceFlush(context.Context) error                       { return nil }
func (dropping) Enabled(context.Context, sdklog.EnabledParameters) bool { return true }

func BenchmarkSDKEmit(b *testing.B) {
	provider := sdklog.NewLoggerProvider(sdklog.WithProcessor(dropping{}))
	logger := provider.Logger("bench")
	ctx := context.Background()
	attrs := []attribute.KeyValue{
		attribute.String("audit.action", "invoice.update"), attribute.String("audit.category", "data_change"),
		attribute.String("audit.outcome", "success"), attribute.String("audit.actor.id", "u-1842"),
		attribute.String("audit.actor.type", "user"), attribute.String("audit.resource.type", "invoice"),
		attribute.String("audit.resource.id", "inv-2026-0042"),
		attribute.String("audit.event.id", "019b7b3a-5c00-7abc-8def-0123456789ab"),
		attribute.String("http.route", "/invoices/{id}"),
	}
	for b.Loop() {
		var rec log.Record
		rec.SetTimestamp(time.Now())
		rec.SetSeverity(log.SeverityInfo)
		rec.SetSeverityText("INFO")
		rec.SetEventName("invoice.update")
		rec.SetBody(attribute.StringValue("user u-1842 invoice.update invoice/inv-2026-0042: success"))
		rec.AddAttributes(attrs...)
		logger.Emit(ctx, rec)
	}
}

func BenchmarkHelperEmit(b *testing.B) {
	provider := sdklog.NewLoggerProvider(sdklog.WithProcessor(dropping{}))
	helper := otelaudit.NewLogger(provider, attribute.String("service.name", "billing"))
	ctx := context.Background()
	e := otelaudit.Event{
		Fields: otelaudit.Fields{
			Action: "invoice.update", Category: "data_change", Outcome: "success", ActorID: "u-1842",
			ActorType: "user", ResourceType: "invoice", ResourceID: "inv-2026-0042",
		},
		Attributes: []attribute.KeyValue{attribute.String("http.route", "/invoices/{id}")},
	}
	for b.Loop() {
		if _, err := helper.Emit(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHelperCost measures both in alternating rounds in CPU time of this process
// (time the machine spends on other work does not count) and reports the medians:
// sdk-us/event, helper-us/event and their difference, cost-us/event. Each b.N event
// is one helper call and one SDK call.
func BenchmarkHelperCost(b *testing.B) {
	provider := sdklog.NewLoggerProvider(sdklog.WithProcessor(dropping{}))
	logger := provider.Logger("bench")
	helper := otelaudit.NewLogger(provider, attribute.String("service.name", "billing"))
	ctx := context.Background()
	e := otelaudit.Event{
		Fields: otelaudit.Fields{
			Action: "invoice.update", Category: "data_change", Outcome: "success", ActorID: "u-1842",
			ActorType: "user", ResourceType: "invoice", ResourceID: "inv-2026-0042",
		},
		Attributes: []attribute.KeyValue{attribute.String("http.route", "/invoices/{id}")},
	}
	attrs := []attribute.KeyValue{
		attribute.String("audit.action", "invoice.update"), attribute.String("audit.category", "data_change"),
		attribute.String("audit.outcome", "success"), attribute.String("audit.actor.id", "u-1842"),
		attribute.String("audit.actor.type", "user"), attribute.String("audit.resource.type", "invoice"),
		attribute.String("audit.resource.id", "inv-2026-0042"),
		attribute.String("audit.event.id", "019b7b3a-5c00-7abc-8def-0123456789ab"),
		attribute.String("http.route", "/invoices/{id}"),
	}
	sdkOnly := func() {
		var rec log.Record
		rec.SetTimestamp(time.Now())
		rec.SetSeverity(log.SeverityInfo)
		rec.SetSeverityText("INFO")
		rec.SetEventName("invoice.update")
		rec.SetBody(attribute.StringValue("user u-1842 invoice.update invoice/inv-2026-0042: success"))
		rec.AddAttributes(attrs...)
		logger.Emit(ctx, rec)
	}
	withHelper := func() {
		if _, err := helper.Emit(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	const rounds = 15
	perRound := max(b.N/rounds, 1)
	round := func(fn func()) float64 {
		start := cpuTime()
		for range perRound {
			fn()
		}
		return float64(cpuTime()-start) / float64(perRound) / 1e3
	}
	round(sdkOnly)
	round(withHelper)
	var base, full []float64
	b.ResetTimer()
	for i := range rounds {
		if i%2 == 1 {
			base = append(base, round(sdkOnly))
			full = append(full, round(withHelper))
		} else {
			full = append(full, round(withHelper))
			base = append(base, round(sdkOnly))
		}
	}
	sdk, helped := median(base), median(full)
	b.ReportMetric(sdk, "sdk-us/event")
	b.ReportMetric(helped, "helper-us/event")
	b.ReportMetric(helped-sdk, "cost-us/event")
}

// cpuTime is the user and system CPU time of this process so far, in nanoseconds.
func cpuTime() int64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return usage.Utime.Nano() + usage.Stime.Nano()
}

func median(values []float64) float64 {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	return sorted[len(sorted)/2]
}
