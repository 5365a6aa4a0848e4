"""Benchmarks: each compares mediaflow with a baseline run side by side and reports ratios."""
