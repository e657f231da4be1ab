"""Throughput benchmarks and the seed documents' own loops (peers)."""
