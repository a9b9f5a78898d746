"""Benchmarks: chatlane against bare arq and the naive patterns, on one private Redis.

``python -m bench`` (``make bench``) prints one table of medians over repeated runs;
``--quick`` is the seconds-long smoke version the test suite runs. See docs/bench.md.
"""
