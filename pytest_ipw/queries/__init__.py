"""Query sets: the query schema and selection (``schema``), and where queries come from (``sources``:
JSONL/CSV/Parquet files, hub data sets with built-in mappings, mixes). May import core and hardware."""
