"""Was the answer right: answer extraction and deterministic scorers (``scorers``), and the model-graded
``judge`` scorer with its verdict cache. May import queries, backends (the judge's model), meters, core."""
