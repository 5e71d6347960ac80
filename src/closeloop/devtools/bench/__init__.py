"""``closeloop bench ...``: benchmarks that print figures (calls, CPU seconds, wall time)."""
