"""Benchmarks: ratios and comparisons measured side by side in one run, medians over repeats."""
