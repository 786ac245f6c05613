"""Demo services and the `make run` orchestration."""
