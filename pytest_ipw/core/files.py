"""Writing result files: atomically, so a crash or a parallel run never leaves half a file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

from pytest_ipw.core.errors import IPWUsageError


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as null so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def read_json(path: str | os.PathLike[str], label: str, fix: str = "") -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file is one IPWUsageError naming it.

    ``label`` names the kind of file ("saved run", "model info file"), ``fix`` is appended to parse errors.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IPWUsageError(f"{label} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IPWUsageError(f"{label} {path} cannot be read ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise IPWUsageError(f"{label} {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
                            + (f"; {fix}" if fix else "")) from None


def jsonl_objects(text: str, path: str | os.PathLike[str], label: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of JSONL text; a line that is not a JSON object is
    one IPWUsageError naming the file and the line. A leading UTF-8 byte-order mark (spreadsheet tools and
    Windows editors write one) is not part of the first line."""
    rows = []
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IPWUsageError(f"{label} {path}, line {number}: invalid JSON ({exc.msg} at column {exc.colno}). "
                                "Fix or remove that line.") from None
        if not isinstance(value, dict):
            raise IPWUsageError(f"{label} {path}, line {number}: each line must be a JSON object, "
                                f"got {type(value).__name__}. Fix or remove that line.")
        rows.append((number, value))
    return rows


def dump_json(document: Mapping[str, Any], stream: IO[str]) -> None:
    """The one JSON encoding of results: indented, no NaN/Infinity (null instead), unknown types as text."""
    json.dump(_finite(document), stream, indent=1, default=_json_default, allow_nan=False)
    stream.write("\n")


def write_json_atomic(path: str | os.PathLike[str], document: Mapping[str, Any]) -> Path:
    """Write via a temporary file and a rename, so readers never see half a file."""
    target = Path(path)
    temp_name = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            dump_json(document, stream)
        os.replace(temp_name, target)
    except OSError as exc:
        if temp_name is not None and os.path.exists(temp_name):
            os.unlink(temp_name)
        raise IPWUsageError(f"could not write results to {target}: {exc.strerror or exc}; choose a writable path") from None
    return target


#: rows per Parquet row group: a reader that wants a few whole records decompresses one group, not the file
PARQUET_ROW_GROUP = 50_000
#: the key of a records Parquet file's schema metadata: which run wrote it, and which columns hold JSON text
PARQUET_METADATA_KEY = b"pytest_ipw"


def results_stamp(document: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies one results document: a Parquet copy of its records carries it, and is read in place
    of the document's records only where the two agree."""
    return {"created_at": document.get("created_at"), "duration_s": document.get("duration_s"),
            "records": len(document.get("records") or ())}


def write_parquet(path: str | os.PathLike[str], records: Sequence[Mapping[str, Any]],
                  stamp: Mapping[str, Any] | None = None) -> Path:
    """Per-query records as a Parquet table (columnar: fast to scan for millions of records); ``stamp``
    (:func:`results_stamp`) ties it to the results document it copies."""
    from pytest_ipw.core.extras import require

    pa = require("pyarrow", "--ipw-parquet")
    pq = require("pyarrow.parquet", "--ipw-parquet")

    target = Path(path)
    def nested(value: Any) -> bool:
        return isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value))

    # nested objects (meter extras, energy parts) vary per meter: a column that holds one anywhere is JSON text
    # throughout, and the metadata names it so that readers decode it
    as_text = {key for r in records for key, value in r.items() if isinstance(value, (dict, list)) and nested(value)}
    rows = [{key: json.dumps(value, default=_json_default) if key in as_text and value is not None else value
             for key, value in r.items()} for r in records]
    temp_name = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(handle)
        # every field any record has (Table.from_pylist would keep only those of the first record)
        keys = list(dict.fromkeys(key for row in rows for key in row))
        table = pa.Table.from_pydict({key: [row.get(key) for row in rows] for key in keys})
        metadata = {"stamp": dict(stamp) if stamp else None, "json_columns": sorted(as_text)}
        table = table.replace_schema_metadata({PARQUET_METADATA_KEY: json.dumps(metadata)})
        pq.write_table(table, temp_name, row_group_size=PARQUET_ROW_GROUP)
        os.replace(temp_name, target)
    except (OSError, pa.ArrowException) as exc:
        if temp_name is not None and os.path.exists(temp_name):
            os.unlink(temp_name)
        raise IPWUsageError(f"could not write records to {target}: {getattr(exc, 'strerror', None) or exc}") from None
    return target
