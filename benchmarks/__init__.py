"""The benchmark harness: ``python -m benchmarks.run [--quick]`` (see docs/benchmarks.md)."""
