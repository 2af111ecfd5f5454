"""One benchmark session, start to finish: what to run (``session``: targets, queries, shards, xdist
pinning), one query measured, scored and recorded (``records``), queries run together (``batching``),
the journal behind ``--ipw-resume`` (``journal``). Everything below it is a library; the pytest plugin
on top only wires hooks and fixtures to this package."""
