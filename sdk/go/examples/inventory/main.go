// Command inventory is a small HTTP service that records audit events with the otelaudit
// helper, as a Go service in a checkout that spans several languages would.
//
//	OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 go run ./inventory -listen 127.0.0.1:8091
//
// POST /reserve {"order": "ord-1", "sku": "sku-7", "caller": "billing", "bad": false}
// continues the caller's trace (W3C traceparent), reserves stock inside a SERVER span and
// records a stock.reserve audit event under that span; with "bad": true it also records an
// event that breaks the schema (the helper emits it anyway, the receiver dead-letters it).
// The answer names the event ids and the span, so a caller can find them again.
//
// Logs and spans leave over OTLP gRPC to OTEL_EXPORTER_OTLP_ENDPOINT (the Collector);
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the service (default inventory).
// The first line on stdout is {"listening": "http://host:port"}; the service's own log is
// JSON on stderr. SIGTERM or SIGINT stops it after flushing every span and audit event.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/log/global"
	"go.opentelemetry.io/otel/propagation"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	otelaudit "github.com/otel-audit/otel-audit/sdk/go"
)

// exportInterval is short so a caller sees the events within a fraction of a second; the
// SDKs' defaults (1 s for logs, 5 s for spans) suit a busy service better.
const exportInterval = 200 * time.Millisecond

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve HTTP on")
	flag.Parse()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(*listen, logger); err != nil {
		logger.Error("inventory stopped", "error", err.Error())
		os.Exit(1)
	}
}

// telemetry holds the SDK providers the service exports through.
type telemetry struct {
	resource *resource.Resource
	tracer   *sdktrace.TracerProvider
	logs     *sdklog.LoggerProvider
}

func setup(ctx context.Context) (*telemetry, error) {
	// Later detectors win: the environment may rename the service.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "inventory")),
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	spans, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("span exporter: %w", err)
	}
	records, err := otlploggrpc.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("log exporter: %w", err)
	}
	t := &telemetry{
		resource: res,
		tracer: sdktrace.NewTracerProvider(
			sdktrace.WithResource(res),
			sdktrace.WithBatcher(spans, sdktrace.WithBatchTimeout(exportInterval)),
		),
		logs: sdklog.NewLoggerProvider(
			sdklog.WithResource(res),
			sdklog.WithProcessor(sdklog.NewBatchProcessor(records,
				sdklog.WithExportInterval(exportInterval))),
		),
	}
	otel.SetTracerProvider(t.tracer)
	global.SetLoggerProvider(t.logs)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	return t, nil
}

// shutdown flushes and stops both providers; every error is returned.
func (t *telemetry) shutdown(ctx context.Context) error {
	return errors.Join(t.tracer.Shutdown(ctx), t.logs.Shutdown(ctx))
}

func run(listen string, logger *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("opentelemetry", "error", err.Error())
	}))
	tel, err := setup(ctx)
	if err != nil {
		return err
	}
	svc := &service{
		tracer: tel.tracer.Tracer("inventory"),
		// The resource lets the helper check service.name as the receiver will.
		audit: otelaudit.NewLogger(tel.logs, tel.resource.Attributes()...),
		log:   logger,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reserve", svc.reserve)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- server.Serve(ln) }()
	line, _ := json.Marshal(map[string]string{"listening": "http://" + ln.Addr().String()})
	fmt.Println(string(line))
	logger.Info("inventory listening", "address", ln.Addr().String())

	select {
	case err = <-served:
	case <-ctx.Done():
	}
	done, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = errors.Join(err, ignoreClosed(server.Shutdown(done)), tel.shutdown(done))
	stats := otelaudit.EmitStats()
	logger.Info("inventory stopped", "audit_emitted", stats.Emitted,
		"audit_invalid", stats.Invalid, "audit_errors", stats.Errors)
	return err
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

type service struct {
	tracer trace.Tracer
	audit  *otelaudit.Logger
	log    *slog.Logger
}

type reserveRequest struct {
	Order  string `json:"order"`
	SKU    string `json:"sku"`
	Caller string `json:"caller"`
	Bad    bool   `json:"bad"`
}

// reply is what every handler answers: the events it recorded and the span they sit under.
type reply struct {
	Service         string   `json:"service"`
	TraceID         string   `json:"trace_id"`
	SpanID          string   `json:"span_id"`
	EventIDs        []string `json:"event_ids"`
	InvalidEventIDs []string `json:"invalid_event_ids"`
	Reserved        bool     `json:"reserved"`
}

func (s *service) reserve(w http.ResponseWriter, r *http.Request) {
	ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := s.tracer.Start(ctx, "POST /reserve", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", "POST"),
			attribute.String("http.route", "/reserve")))
	defer span.End()

	var req reserveRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, `{"error": "the body is not the JSON of a reservation"}`, http.StatusBadRequest)
		return
	}
	out := reply{
		Service: "inventory", TraceID: span.SpanContext().TraceID().String(),
		SpanID: span.SpanContext().SpanID().String(), EventIDs: []string{}, InvalidEventIDs: []string{},
		Reserved: true,
	}
	caller := req.Caller
	if caller == "" {
		caller = "unknown"
	}
	id, _ := s.audit.Emit(ctx, otelaudit.Event{Fields: otelaudit.Fields{
		Action: "stock.reserve", Category: otelaudit.CategoryDataChange,
		Outcome: otelaudit.OutcomeSuccess, ActorID: caller, ActorType: otelaudit.ActorTypeService,
		ResourceType: "sku", ResourceID: req.SKU, CorrelationID: req.Order,
	}})
	out.EventIDs = append(out.EventIDs, id)
	if req.Bad {
		// Breaks the schema on purpose: "reserved" is not an outcome.
		id, _ = s.audit.Emit(ctx, otelaudit.Event{Fields: otelaudit.Fields{
			Action: "stock.reserve", Category: otelaudit.CategoryDataChange, Outcome: "reserved",
			ActorID: caller, ActorType: otelaudit.ActorTypeService,
			ResourceType: "sku", ResourceID: req.SKU,
		}})
		out.InvalidEventIDs = append(out.InvalidEventIDs, id)
	}
	span.SetAttributes(attribute.Int("http.response.status_code", http.StatusOK))
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(out); err != nil {
		s.log.Warn("answer not sent", "error", err.Error())
	}
}
