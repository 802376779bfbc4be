"""Device tests: parity bundles for phones, output comparison, latency benchmarks, reports."""
