"""The bottom layer: errors and the project's file formats (JSON/JSONL reading with clear errors, atomic
writes). Imports nothing else of pytest-ipw."""
