"""Benchmark harness: a fake upstream, a load generator and the driver that compares them.

Run with ``make bench`` (full, under 5 minutes) or ``make bench-quick`` (a smoke run); never
part of the test command. Everything listens and connects on 127.0.0.1 only.
"""
