"""Runs over time and across machines: saved runs per machine id and commit (``storage``), paired
comparison and gates (``compare``), this run against its baseline (``baseline``), and several runs merged
into one results document (``merge``). May import analysis and the layers below."""
