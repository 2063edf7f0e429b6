"""Benchmarks (`make bench`): each module writes one section of docs/benchmarks.md."""
