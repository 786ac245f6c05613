"""Benchmarks of otel-audit; ``python -m bench`` runs them all and prints one report."""
