"""Coverage-guided fuzzing of the OTLP decoders (see fuzz/README.md)."""
