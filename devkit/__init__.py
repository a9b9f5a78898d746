"""Helpers to run chatlane locally: a private redis-server and worker processes.

Used by the demo, the tests, the soak and the benchmarks; not needed in production.
"""
