"""Reproducible benchmarks: ratios against a baseline run side by side on the same machine."""
