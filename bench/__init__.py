"""Benchmarks: ``make bench`` (``python -m bench [NAME ...]``) runs them and writes BENCHMARKS.md.

Each ``bench/bench_<name>.py`` has ``run() -> str``: it measures (medians of repeated runs, with its
reference measured in the same run) and returns a Markdown section, kept in
``bench/results/<name>.md``. BENCHMARKS.md is the machine header plus every section, so running
one benchmark again refreshes its section without rerunning the others.
"""
