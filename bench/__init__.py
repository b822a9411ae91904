"""Benchmarks for sessions.py: run ``python bench/run.py`` (``--quick`` for a seconds-long smoke run)."""
