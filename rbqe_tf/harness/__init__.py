"""The on-device benchmark harness (TensorFlow-free): latency, staged vs monolithic,
early exit on a mixed set, memory, energy, op profiles, benchmark_model logs
(docs/export.md, "The benchmark harness")."""
