"""Saved runs: one JSON file per run, per machine, per commit.

Layout (``--ipw-storage``, default ``.ipw/`` in pytest's rootdir)::

    .ipw/<machine-id>/NNNN_<commit>_<YYYYmmddTHHMMSS>[_dirty][_<name>].json

The machine id covers what decides whether two runs' figures are comparable: the CPU model, the
accelerator profiles and devices, the meter (sensor, provenance, driver, power limit). It leaves out the
host name, which ephemeral CI runners change on every job on the same hardware. ``--ipw-machine-id``
sets it explicitly. Writes are
atomic and exclusive: two runs saving at once both survive, under different numbers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from pytest_ipw.core import defaults
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.core.files import dump_json, read_json

if TYPE_CHECKING:
    from pytest_ipw.analysis.table import RecordTable

STORAGE_DIR = defaults.STORAGE_DIR
#: the files that make a folder pytest's rootdir (the nearest one upwards holding any of them)
_ROOT_MARKERS = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg", "setup.py")


def default_storage(start: str | os.PathLike[str] | None = None) -> str:
    """``<rootdir>/.ipw`` for the command line: the rootdir pytest would choose for a run started here (the
    nearest folder upwards with an ini or project file), else the current folder."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).is_file() for marker in _ROOT_MARKERS):
            return str(folder / STORAGE_DIR)
    return str(here / STORAGE_DIR)
SUPPORTED_SCHEMA_VERSIONS = (1,)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FILE = re.compile(r"(?P<number>\d{4,})_(?P<commit>[^_]+)_(?P<stamp>\d{8}T\d{6})(?P<dirty>_dirty)?(?:_(?P<name>.+))?\.json")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:40] or "unknown"


#: the facts of a machine id, and how a difference in each is named when no baseline matches
IDENTITY_LABELS = {"system": "operating system", "machine": "architecture", "cpu": "CPU",
                   "accelerators": "accelerators", "meters": "meter"}


def machine_identity(machine_info: Mapping[str, Any], meters: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What makes two runs' energy figures comparable (the host name is not part of it)."""
    accelerators = sorted({(a.get("profile"), a.get("device_name")) for a in machine_info.get("accelerators", [])},
                          key=str)
    meter_facts = sorted(
        {(m.get("meter"), m.get("sensor"), m.get("provenance"), m.get("driver_version"), m.get("power_limit_w"))
         for m in meters.values()},
        key=str,
    )
    return {"system": machine_info.get("system"), "machine": machine_info.get("machine"),
            "cpu": machine_info.get("cpu"), "accelerators": [list(a) for a in accelerators],
            "meters": [list(m) for m in meter_facts]}


def machine_id(machine_info: Mapping[str, Any], meters: Mapping[str, Mapping[str, Any]]) -> str:
    """A readable, stable id: accelerator profiles, CPU, and a hash of everything that changes energy."""
    identity = machine_identity(machine_info, meters)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    profiles = "+".join(sorted({str(p) for p, _ in identity["accelerators"]})) or "none"
    return f"{_slug(profiles)}-{_slug(identity['cpu'] or 'cpu')[:24].strip('-')}-{digest}"


def document_identity(document: Mapping[str, Any]) -> dict[str, Any]:
    """The machine identity of a saved results document (recomputed for runs saved before it was stored)."""
    stored = document.get("machine_identity")
    if isinstance(stored, dict):
        return stored
    return machine_identity(document.get("machine_info", {}), document.get("settings", {}).get("meters", {}))


_METER_FACTS = ("meter", "sensor", "provenance", "driver", "power limit (W)")


def identity_differences(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """Each fact that differs, named: ``driver 565.57 vs 550.54`` (ours first)."""
    differences = []
    for key, label in IDENTITY_LABELS.items():
        a, b = ours.get(key), theirs.get(key)
        if a == b:
            continue
        if key == "meters" and len(a or []) == len(b or []) == 1:
            differences.extend(f"{name} {x} vs {y}" for name, x, y in zip(_METER_FACTS, a[0], b[0]) if x != y)
        elif key == "accelerators":
            differences.append(f"{label} {_devices(a)} vs {_devices(b)}")
        else:
            differences.append(f"{label} {a} vs {b}")
    return differences


def _devices(accelerators: Any) -> str:
    return ", ".join(f"{p} ({name})" if name else str(p) for p, name in (accelerators or [])) or "none"


def check_save_name(name: str) -> str:
    """A save name may not contain path separators or start with a dot: it cannot leave the storage."""
    if not _NAME.fullmatch(name):
        raise IPWUsageError(
            f"--ipw-save={name!r}: a name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class SavedRun:
    path: Path
    machine_id: str
    number: int
    commit: str
    stamp: str
    dirty: bool
    name: str | None

    @property
    def id(self) -> str:
        return f"{self.machine_id}/{self.path.stem}"

    @classmethod
    def from_path(cls, path: Path) -> "SavedRun | None":
        match = _FILE.fullmatch(path.name)
        if not match:
            return None
        return cls(path, path.parent.name, int(match["number"]), match["commit"], match["stamp"],
                   bool(match["dirty"]), match["name"])


_DAMAGED = "it is corrupt or truncated: delete it or restore it from a backup"
#: fields every record of a results file has (a file without them is damaged or foreign)
_NEEDED = ("query_id", "model", "accelerator", "domain", "correct", "joules", "watts", "latency_s")


def load_run(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a saved run or results file; a corrupt, truncated or foreign file is one clear error."""
    path = Path(path)
    document = read_json(path, "saved run", _DAMAGED)
    _check_document(document, path)
    records = document.get("records")
    if not isinstance(records, list):
        raise IPWUsageError(f"saved run {path} has no list of records; it is not a complete pytest-ipw results file")
    _check_records(records, path, 0)
    return document


def _check_document(document: Any, path: Path) -> None:
    if not isinstance(document, dict):
        raise IPWUsageError(f"saved run {path} is not a pytest-ipw results file (expected a JSON object)")
    version = document.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise IPWUsageError(
            f"saved run {path} has schema_version {version!r}; this pytest-ipw reads {SUPPORTED_SCHEMA_VERSIONS}. "
            "Upgrade pytest-ipw, or re-run to save the run again"
        )


def _check_records(records: list[Any], path: Path, first_index: int, required: Sequence[str] = _NEEDED) -> None:
    needed = frozenset(required)
    for index, record in enumerate(records, start=first_index):
        if not isinstance(record, dict):
            raise IPWUsageError(f"saved run {path} has no list of records; it is not a complete pytest-ipw results file")
        if needed <= record.keys():  # the common case, one set comparison
            continue
        missing = [key for key in required if key not in record]
        raise IPWUsageError(f"saved run {path}: record {index} lacks {', '.join(missing)}; the file is damaged")


#: how the one results writer (:func:`pytest_ipw.core.files.dump_json`, indent 1) lays out the records:
#: raw newlines occur only between tokens, so these byte strings mark the array and each record's end
_RECORDS_START = b'\n "records": [\n'
_RECORDS_END = b"\n ]"
_RECORD_END = b"\n  },"
_CHUNK_BYTES = 8 << 20

try:
    import orjson as _orjson
except ImportError:  # optional: pip install "pytest-ipw[fast]"
    _orjson = None


def load_run_table(path: str | os.PathLike[str], keep_first: int = 0,
                   required: Sequence[str] = _NEEDED) -> tuple[dict[str, Any], "RecordTable"]:
    """A results file as (its document, its records as a table), without ever holding all records as dicts:
    the records are parsed a few megabytes at a time into the columns the aggregates read
    (:func:`pytest_ipw.analysis.table.concatenate`). ``document["records"]`` is the table's records: whole
    for the first ``keep_first`` and for those the analyses read whole, else rebuilt from the columns.
    Every record must have the ``required`` fields. A file in another layout is read whole (same result,
    more memory)."""
    from pytest_ipw.analysis.table import RecordTable, as_table, concatenate

    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise IPWUsageError(f"saved run {path} does not exist") from None
    except OSError as exc:
        raise IPWUsageError(f"saved run {path} cannot be read ({exc})") from None
    with handle:
        head = handle.read(_CHUNK_BYTES)
        start = head.find(_RECORDS_START)
        if start < 0:  # another writer's layout (or no records): read it whole
            document = load_run(path)
            _check_records(document["records"], path, 0, required)
            return document, as_table(document["records"])
        prefix = head[:start] + b'\n "records": []'
        copy = _parquet_copy(prefix, path)
        if copy is not None:  # the run also wrote its records as Parquet: read columns from there
            parquet, stamp = copy
            try:
                table = _table_from_parquet(parquet, keep_first, required, path)
            except (OSError, ValueError, TypeError, NotImplementedError):  # an unreadable copy: the JSON has all
                table = None
            if table is not None and len(table) == stamp.get("records"):
                document = _parse(prefix + _after_records(handle, path, start + len(_RECORDS_START) - 1), path)
                _check_document(document, path)
                document["records"] = table.records
                return document, table
        rest: list[bytes] = []  # what follows the records, once they are read

        def parts() -> Iterator[RecordTable]:
            # one table per chunk, made and handed on before the next chunk is parsed
            buffer, count = head[start + len(_RECORDS_START) - 1:], 0  # from the newline before the first record
            while True:
                end = buffer.find(_RECORDS_END)
                cut = end if end >= 0 else buffer.rfind(_RECORD_END)
                if cut >= 0:
                    chunk = buffer[:cut + (0 if end >= 0 else len(_RECORD_END) - 1)]
                    records = _parse(b"[" + chunk + b"]", path) if chunk.strip() else []
                    _check_records(records, path, count, required)
                    count += len(records)
                    yield RecordTable(records)
                if end >= 0:
                    rest.append(buffer[end + len(_RECORDS_END):] + handle.read())
                    return
                buffer = buffer[cut + len(_RECORD_END):] if cut >= 0 else buffer
                more = handle.read(_CHUNK_BYTES)
                if not more:
                    raise IPWUsageError(f"saved run {path} ends inside its records; {_DAMAGED}")
                buffer += more

        table = concatenate(parts(), keep_first=keep_first)
    document = _parse(prefix + rest[0], path)
    _check_document(document, path)
    document["records"] = table.records
    return document, table


#: what follows a run's records (the key after them in IPWSession.results_document), searched from the end
_AFTER_RUN_RECORDS = b'\n ],\n "skipped_queries": '


def _after_records(handle: Any, path: Path, records_start: int) -> bytes:
    """Skip the records array (a byte search, nothing parsed); what follows it, to the end of the file."""
    size = os.fstat(handle.fileno()).st_size
    handle.seek(max(records_start, size - _CHUNK_BYTES))  # the end of a run's file: what follows its records
    tail = handle.read()
    found = tail.rfind(_AFTER_RUN_RECORDS)
    if found >= 0:
        return tail[found + len(_RECORDS_END):]
    handle.seek(records_start)  # another document's layout: search forward
    tail = b""
    while True:
        block = handle.read(_CHUNK_BYTES)
        if not block:
            raise IPWUsageError(f"saved run {path} ends inside its records; {_DAMAGED}")
        buffer = tail + block
        end = buffer.find(_RECORDS_END)
        if end >= 0:
            return buffer[end + len(_RECORDS_END):] + handle.read()
        tail = buffer[-len(_RECORDS_END):]


def _parquet_copy(prefix: bytes, path: Path) -> tuple[Path, dict[str, Any]] | None:
    """The Parquet file a run wrote beside its results (``--ipw-parquet``), where it is readable and its
    metadata names this very document (:func:`~pytest_ipw.core.files.results_stamp`), with that stamp; else None."""
    try:
        head = json.loads(prefix + b"\n}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    option = (((head.get("settings") or {}).get("options") or {}).get("ipw_parquet") or {})
    named = option.get("value") if isinstance(option, Mapping) else None
    if not named or importlib.util.find_spec("pyarrow") is None:
        return None
    import pyarrow.parquet as pq

    from pytest_ipw.core.files import PARQUET_METADATA_KEY

    for candidate in dict.fromkeys((Path(named), path.parent / named)):
        try:
            metadata = pq.read_schema(candidate).metadata or {}
            stamp = json.loads(metadata.get(PARQUET_METADATA_KEY, b"{}")).get("stamp") or {}
        except (OSError, ValueError):
            continue
        if stamp.get("created_at") == head.get("created_at") and stamp.get("duration_s") == head.get("duration_s") \
                and head.get("created_at") is not None:
            return candidate, stamp
    return None


def _table_from_parquet(parquet: Path, keep_first: int, required: Sequence[str], path: Path) -> "RecordTable":
    """The columns the aggregates read, straight from a Parquet copy of the records (no record becomes a dict
    but the first ``keep_first`` and those the analyses read whole)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pytest_ipw.analysis.table import (
        AS_LABEL, CODE, FLAG_FIELDS, KEEP_WHOLE_WHEN, NUMBER_FIELDS, PRESENCE_FIELDS, TEXT_FIELDS, columns_table,
        encode, merge_equal_labels)
    from pytest_ipw.core.files import PARQUET_METADATA_KEY

    schema = pq.read_schema(parquet)
    as_text = set(json.loads((schema.metadata or {}).get(PARQUET_METADATA_KEY, b"{}")).get("json_columns") or ())
    absent = [name for name in required if name not in schema.names]
    if absent:
        raise IPWUsageError(f"saved run {path}: its records ({parquet}) lack {', '.join(absent)}; the file is damaged")
    source = pq.ParquetFile(parquet)
    count = source.metadata.num_rows

    def column(name: str) -> Any:
        # one column at a time, dropped once converted: memory holds one column's Arrow copy at most
        return source.read(columns=[name]).column(name).combine_chunks() if name in schema.names else None

    decoded: dict[str, list[Any] | None] = {}

    def python_values(name: str) -> list[Any] | None:
        """Each row's value of a nested field (``judge.joules``: of the judge object), JSON text decoded;
        None where no row has the object (most runs have no judge)."""
        outer, _, inner = name.partition(".")
        if outer not in decoded:
            values = column(outer)
            decoded[outer] = None if values is None or values.null_count == count else [
                json.loads(v) if outer in as_text and isinstance(v, str) else v for v in values.to_pylist()]
        objects = decoded[outer]
        if objects is None or not inner:
            return objects
        return [v.get(inner) if isinstance(v, dict) else None for v in objects]

    numbers = {}
    for name in NUMBER_FIELDS:
        if "." in name:
            values = python_values(name)
            numbers[name] = np.full(count, np.nan) if values is None else np.array(values, dtype=np.float64)
            continue
        values = column(name)
        numbers[name] = np.full(count, np.nan) if values is None else \
            np.asarray(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    flags = {}
    for name in FLAG_FIELDS:
        if "." in name:
            values = python_values(name)
            flags[name] = np.zeros(count, dtype=np.bool_) if values is None else \
                np.fromiter(map(bool, values), dtype=np.bool_, count=count)
            continue
        values = column(name)
        if values is None or pa.types.is_null(values.type):
            flags[name] = np.zeros(count, dtype=np.bool_)
        elif pa.types.is_boolean(values.type):
            flags[name] = np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=np.bool_)
        elif pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            flags[name] = np.asarray(pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)) > 0
        else:  # JSON text of an object or list, or plain text: truthy unless null or empty
            empty = {"", "[]", "{}", "null", "false"} if name in as_text else {""}
            flags[name] = np.array([v is not None and v not in empty for v in values.to_pylist()], dtype=np.bool_)
    present = {name: np.full(count, name in schema.names) for name in PRESENCE_FIELDS}
    def dictionary_codes(values: Any) -> tuple[Any, list[Any]]:
        """Codes and first-seen labels of a text column (each label used; None for absent or null)."""
        encoded = values.dictionary_encode()
        labels = encoded.dictionary.to_pylist() + ([None] if values.null_count else [])
        indices = pc.fill_null(encoded.indices, len(labels) - 1).to_numpy(zero_copy_only=False)
        return np.asarray(indices, dtype=CODE), labels

    def nested_codes(name: str) -> tuple[Any, list[Any]]:
        """Codes of a nested field held as labels (meter_flags, energy_parts): only distinct values or
        non-empty rows become Python objects."""
        label, values = AS_LABEL[name], column(name)
        if values is None or pa.types.is_null(values.type):
            return np.zeros(count, dtype=CODE), [label(None)] if count else []
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):  # JSON text: few distinct
            text_codes, texts = dictionary_codes(values)
            labels = [label(None if text is None else json.loads(text) if name in as_text else text) for text in texts]
            return merge_equal_labels(text_codes, labels)
        lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
        filled = np.flatnonzero(lengths > 0)
        filled_codes, filled_labels = encode([label(v) for v in values.take(pa.array(filled)).to_pylist()])
        result = np.zeros(count, dtype=CODE)  # label 0: an empty value
        result[filled] = filled_codes + 1
        return merge_equal_labels(result, [label(None)] + filled_labels)

    codes = {}
    for name in TEXT_FIELDS:
        if name in AS_LABEL:
            codes[name] = nested_codes(name)
            continue
        if "." in name:
            values = python_values(name)
            codes[name] = (np.zeros(count, dtype=CODE), [None] if count else []) if values is None else encode(values)
            continue
        values = column(name)
        if values is None:
            codes[name] = (np.zeros(count, dtype=CODE), [None] if count else [])
        elif pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            codes[name] = dictionary_codes(values)
        else:
            codes[name] = encode(values.to_pylist())
    whole = np.zeros(count, dtype=np.bool_)
    whole[:keep_first] = True
    for name in KEEP_WHOLE_WHEN:
        whole |= flags[name]
    positions = np.flatnonzero(whole)
    kept: dict[int, dict[str, Any]] = {}
    offset = 0
    # whole records, one row group at a time (the writer makes them small: the first answers' group is read,
    # not every answer's text)
    for group in range(source.metadata.num_row_groups) if len(positions) else ():
        rows = source.metadata.row_group(group).num_rows
        inside = positions[(positions >= offset) & (positions < offset + rows)]
        if len(inside):
            batch = source.read_row_group(group).take(pa.array(inside - offset)).to_pylist()
            for position, record in zip(inside.tolist(), batch):
                kept[position] = {key: json.loads(value) if key in as_text and isinstance(value, str) else value
                                  for key, value in record.items() if value is not None or key in PRESENCE_FIELDS}
        offset += rows
    table = columns_table(count, numbers, flags, present, codes, kept)
    pa.default_memory_pool().release_unused()  # Arrow's buffers of the columns read, back to the system
    return table


def _parse(data: bytes, path: Path) -> Any:
    if _orjson is not None:  # the [fast] extra: the same values, parsed about twice as fast
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass  # what orjson refuses (an integer beyond 64 bits, NaN) the standard parser reads or names
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IPWUsageError(f"saved run {path} is not valid JSON ({exc}); {_DAMAGED}") from None


def partial_note(document: Mapping[str, Any]) -> str:
    """``25 of 363 queries`` for a partial run (how much of it finished)."""
    expected = document.get("expected_records")
    done = len(document.get("records") or [])
    return f"{done} of {expected} queries" if expected else f"{done} queries, fewer than were collected"


@dataclass(frozen=True)
class BaselineChoice:
    """The outcome of :meth:`Storage.select_baseline`: the run and its document (None when nothing matches),
    whether the selector named that one run, and the partial runs passed over on the way."""

    run: SavedRun | None
    document: Mapping[str, Any] | None
    explicit: bool = False
    skipped: list[tuple[SavedRun, Mapping[str, Any]]] = field(default_factory=list)

    def skipped_line(self) -> str | None:
        """``skipped 1 partial run (0003_...: 25 of 363 queries)``, or None."""
        if not self.skipped:
            return None
        runs = ", ".join(f"{run.id}: {partial_note(document)}" for run, document in self.skipped)
        count = len(self.skipped)
        return f"skipped {count} partial run{'s' if count > 1 else ''} ({runs})"


class Storage:
    def __init__(self, root: str | os.PathLike[str] = STORAGE_DIR):
        self.root = Path(root)

    def runs(self, machine: str | None = None) -> list[SavedRun]:
        """Saved runs, oldest first, of one machine id or of all."""
        if not self.root.is_dir():
            return []
        folders = [self.root / machine] if machine else sorted(p for p in self.root.iterdir() if p.is_dir())
        found = []
        for folder in folders:
            if folder.is_dir():
                found.extend(run for run in map(SavedRun.from_path, folder.glob("*.json")) if run is not None)
        return sorted(found, key=lambda r: (r.stamp, r.machine_id, r.number))

    def save(self, document: Mapping[str, Any], *, machine: str, commit: str, dirty: bool, name: str | None = None) -> SavedRun:
        """Write atomically under the next free number; a concurrent save takes the number after."""
        if name is not None:
            check_save_name(name)
        folder = self.root / machine
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=".saving-", suffix=".tmp", dir=folder)
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                dump_json(document, stream)
        except OSError as exc:
            raise IPWUsageError(f"could not save the run under {folder}: {exc.strerror or exc}; check --ipw-storage") from None
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        suffix = ("_dirty" if dirty else "") + (f"_{name}" if name else "")
        number = max((r.number for r in self.runs(machine)), default=0) + 1
        try:
            while True:
                target = folder / f"{number:04d}_{_slug(commit)[:12] or 'unversioned'}_{stamp}{suffix}.json"
                try:
                    os.link(temp, target)  # atomic, and fails if that exact name exists
                except FileExistsError:
                    number += 1
                    continue
                # Two writers may pick the same number under different names: the greater name yields.
                rivals = sorted(folder.glob(f"{number:04d}_*.json"))
                if rivals and rivals[0] != target:
                    os.unlink(target)
                    number += 1
                    continue
                break
        finally:
            os.unlink(temp)
        return SavedRun.from_path(target)  # type: ignore[return-value]

    def resolve(self, selector: str, machine: str, across_machines: bool = False) -> SavedRun | None:
        """A saved run by ``latest``, number (``0003``), save name, commit prefix, branch name, or path.

        Only this machine's runs are searched unless ``across_machines``. Returns None when nothing matches.
        """
        as_path = Path(selector)
        if selector.endswith(".json") and as_path.is_file():
            run = SavedRun.from_path(as_path)
            return run or SavedRun(as_path, as_path.parent.name, 0, "unknown", "", False, None)
        runs = self.runs(None if across_machines else machine)
        if not runs:
            return None
        if selector == "latest":
            return runs[-1]
        for run in reversed(runs):
            if selector.isdigit() and run.number == int(selector):
                return run
            if run.name == selector or (len(selector) >= 4 and run.commit.startswith(selector.lower())):
                return run
        # a branch name: the newest run whose saved commit_info names it
        for run in reversed(runs):
            try:
                info = json.loads(run.path.read_text(encoding="utf-8")).get("commit_info", {})
            except (OSError, json.JSONDecodeError):
                continue
            if info.get("branch") == selector:
                return run
        return None

    def select_baseline(self, selector: str, machine: str, across_machines: bool = False,
                        load: Callable[[Path], dict[str, Any]] = load_run) -> "BaselineChoice":
        """The run ``--ipw-compare=SELECTOR`` compares with, loaded.

        ``latest``, a commit prefix and a branch name choose among runs, and pass over PARTIAL ones (an
        interrupted CI job must not become the baseline), listing those it passed over. A number, a save
        name or a path names one run: it is used even when partial (the caller says so).
        """
        as_path = Path(selector)
        if selector.endswith(".json") and as_path.is_file():
            run = SavedRun.from_path(as_path) or SavedRun(as_path, as_path.parent.name, 0, "unknown", "", False, None)
            return BaselineChoice(run, load(as_path), explicit=True)
        runs = list(reversed(self.runs(None if across_machines else machine)))
        skipped: list[tuple[SavedRun, Mapping[str, Any]]] = []
        for run in runs:
            if (selector.isdigit() and run.number == int(selector)) or run.name == selector:
                return BaselineChoice(run, load(run.path), explicit=True, skipped=skipped)
            if selector == "latest" or (len(selector) >= 4 and run.commit.startswith(selector.lower())):
                document = load(run.path)  # a damaged newest run is an error, never passed over
                if not document.get("partial"):
                    return BaselineChoice(run, document, skipped=skipped)
                skipped.append((run, document))
        if selector == "latest":
            return BaselineChoice(None, None, skipped=skipped)
        for run in runs:  # a branch name: the newest complete run whose saved commit_info names it
            try:
                document = load(run.path)
            except IPWUsageError:
                continue
            if (document.get("commit_info") or {}).get("branch") != selector:
                continue
            if not document.get("partial"):
                return BaselineChoice(run, document, skipped=skipped)
            if all(run is not seen for seen, _ in skipped):
                skipped.append((run, document))
        return BaselineChoice(None, None, skipped=skipped)

    def other_machines(self, machine: str) -> list[str]:
        return sorted({r.machine_id for r in self.runs()} - {machine})

    def nearest_machine(self, identity: Mapping[str, Any], machine: str) -> tuple[str, list[str]] | None:
        """The other machine id whose latest readable run differs from ``identity`` in the fewest facts."""
        best: tuple[str, list[str]] | None = None
        for other in self.other_machines(machine):
            for run in reversed(self.runs(other)):
                try:
                    differences = identity_differences(identity, document_identity(load_run(run.path)))
                except IPWUsageError:
                    continue
                if best is None or len(differences) < len(best[1]):
                    best = (other, differences)
                break
        return best
