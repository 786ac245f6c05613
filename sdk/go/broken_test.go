package otelaudit_test

import (
	"context"

	"go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/log/embedded"
)

// brokenProvider stands for an SDK whose exporter blows up inside Emit.
type brokenProvider struct{ embedded.LoggerProvider }

func (brokenProvider) Logger(string, ...log.LoggerOption) log.Logger { return brokenLogger{} }

type brokenLogger struct{ embedded.Logger }

func (brokenLogger) Emit(_ context.Context, _ log.Record) { panic("exporter exploded") }

func (brokenLogger) Enabled(context.Context, log.EnabledParameters) bool { return true }
