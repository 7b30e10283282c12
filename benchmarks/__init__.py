"""`make bench`: every benchmark side by side in one run, written to docs/benchmarks.md."""
