"""Performance benchmarks of ``jebm_lite`` (issue 8): ``python -m benchmarks.run --help``.

See ``book/performance.md`` for what is measured and the stored results in ``benchmarks/results/``.
"""
