"""Benchmarks of the platform, run with `python -m bench` (or `make bench`).

Each benchmark starts what it needs with the project's own infrastructure code, prints one Markdown
table to stdout and writes it to bench/results/latest.md (raw numbers in latest.json).
"""
