"""Example pipelines: benchmarks that do their own thing and hand their measurements to ``ipw_record``.

Not part of the default ``pytest benchmarks/`` run: select them on purpose, alone or beside the single-shot
benchmark, e.g. ``pytest benchmarks/ examples/pipelines/ --ipw-limit=60``. Each function is its own row
(model × accelerator × benchmark) in the report, coverage, routing and comparisons.
"""
