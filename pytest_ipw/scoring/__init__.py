"""Was the answer right. ``reading`` (the verdict type, clean-up, and the rule every scorer shares: the last
committed answer counts, hedges and rejected values do not), ``numbers`` and ``choices`` (extraction), ``scorers``
(exact, regex, math, the dispatch ``score()``), and the model-graded ``judge`` with its verdict cache. May import
queries, backends (the judge's model), meters and core."""
