"""Benchmarks of hub: a multi-process load generator, scenarios, and reports (see benchmarks/README.md)."""
