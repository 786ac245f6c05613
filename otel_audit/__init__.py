"""otel-audit: audit events as OpenTelemetry log records."""
