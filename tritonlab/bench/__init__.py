"""Benchmarks: cost models and cases (ops), timing, measured ceilings, the runner
that checks then times every provider, and the report it writes."""
