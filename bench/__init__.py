"""Benchmarks: one module per capability, each printing its figures next to the limit it is measured against."""
