"""Benchmarks for pgstack: ratios measured in one run, written to docs/benchmarks.{json,png,md}."""
