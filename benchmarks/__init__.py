"""Benchmarks: wispbot against an idiomatic aiogram peer (``python -m benchmarks``)."""
