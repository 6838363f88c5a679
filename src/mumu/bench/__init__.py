"""Benchmarks: mumu against a raw baseline, same run, ratios recorded."""
