package otelaudit

import (
	"context"
	"errors"
	"math/rand/v2"
	"regexp"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdklog "go.opentelemetry.io/otel/sdk/log"
)

// The validator's fast paths must give the same verdicts as the plain ones.

func TestTheControlSearcherFindsWhatTheRegexpFinds(t *testing.T) {
	re := regexp.MustCompile(schema.ControlPattern)
	alphabet := []string{"a", "Z", ".", " ", "\x00", "\x1f", "\x7f", "\x80", "é", "\u2028", "\xff", "\xc3", "😀"}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		text := ""
		for range rng.IntN(8) {
			text += alphabet[rng.IntN(len(alphabet))]
		}
		if got, want := schema.control(text), re.MatchString(text); got != want {
			t.Fatalf("%q: searcher %v, regexp %v", text, got, want)
		}
	}
	// Patterns that are not one ASCII class fall back to the regexp.
	for _, pattern := range []string{schema.KeyBadPattern, "[\u2028-\u2029]", "a+"} {
		find, re := searcher(pattern), regexp.MustCompile(pattern)
		for _, text := range []string{"", "a", "..", "x\u2028", ".a", "b"} {
			if find(text) != re.MatchString(text) {
				t.Fatalf("%s on %q", pattern, text)
			}
		}
	}
}

func TestManyAndRepeatedAttributesAreReadLikeAMap(t *testing.T) {
	base := []attribute.KeyValue{
		attribute.String("audit.action", "invoice.update"), attribute.String("audit.category", "data_change"),
		attribute.String("audit.outcome", "ok"), attribute.String("audit.actor.id", "u-1"),
		attribute.String("audit.actor.type", "user"), attribute.String("audit.resource.type", "invoice"),
		attribute.String("audit.resource.id", "inv-1"),
		// Repeated: the last value wins, as in a map (and in Python's dict).
		attribute.String("audit.outcome", "success"),
	}
	now := time.Now().UnixNano()
	resource := []attribute.KeyValue{attribute.String("service.name", "billing")}
	for _, extra := range []int{0, 8, 40} { // below and above the linear-scan size
		attrs := append([]attribute.KeyValue{}, base...)
		for i := range extra {
			attrs = append(attrs, attribute.Int("x.n"+string(rune('a'+i%26))+string(rune('a'+i/26)), i))
		}
		attrs = append(attrs, attribute.String("x.na", "repeated"), attribute.String("bad..key", "x"))
		got := Validate(Record{Attributes: attrs, Resource: resource, TimeUnixNano: now}, now)
		if len(got) != 1 || got[0].Field != "attributes.bad..key" || got[0].Rule != "attribute_key" {
			t.Fatalf("%d extra attributes: %v", extra, got)
		}
	}
}

func TestALoggersResourceIsCheckedOnEveryEventUntilItIsValid(t *testing.T) {
	SetStrict(true)
	defer ResetStrict()
	event := Event{Fields: Fields{
		Action: "invoice.update", Category: CategoryDataChange, Outcome: OutcomeSuccess,
		ActorID: "u-1", ActorType: ActorTypeUser, ResourceType: "invoice", ResourceID: "inv-1",
	}}
	broken := NewLogger(sdklog.NewLoggerProvider(), attribute.String("service.name", " "))
	for range 2 {
		_, err := broken.Emit(context.Background(), event)
		var invalid *ValidationError
		if !errors.As(err, &invalid) || invalid.Violations[0].Field != "resource.service.name" {
			t.Fatalf("want the resource's violation on every event, got %v", err)
		}
	}
	fine := NewLogger(sdklog.NewLoggerProvider(), attribute.String("service.name", "billing"))
	for range 2 {
		if _, err := fine.Emit(context.Background(), event); err != nil {
			t.Fatal(err)
		}
	}
}
