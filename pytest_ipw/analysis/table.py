"""Records as columns: the one form every aggregate is computed from.

A run keeps its records as dicts (they are written, journalled and shown one by one), but a summary over a
million of them must not walk a million dicts once per figure. :class:`RecordTable` turns the fields an
aggregate reads into numpy arrays, each the first time it is asked for, and keeps it: building the table
costs nothing, and a session's summaries, coverage and accuracy by domain share one set of columns.

The rules themselves (what counts as correct, which energy basis, which windows are left out) live in
:mod:`pytest_ipw.analysis.metrics`; this module only knows how to hold values:

- ``numbers(name)``: float64, NaN where the field is absent or null;
- ``flags(name)``: bool, the field's truthiness (absent and null are False);
- ``codes(name)``: (int codes, labels) for text fields, labels in first-seen order.

Nested fields are columns too: ``meter_flags`` and ``energy_parts`` are coded as tuples (a run has few
distinct ones), and a judge's verdict as ``judge.<field>`` columns, so that no analysis needs a whole record
but for the rare query that could not be answered.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

#: the dtype of a text field's codes: 4 bytes a record (a run has far fewer than 2**31 distinct values)
CODE = np.int32

#: marks an absent field among a text column's labels (``codes(name, default=...)`` replaces it)
ABSENT = None


#: the fields aggregates read, by kind: what a table read from a results file holds (see :func:`concatenate`)
NUMBER_FIELDS = ("joules", "watts", "seconds", "latency_s", "ttft_s", "tokens_in", "tokens_out", "joules_active",
                 "idle_watts", "prefill_joules", "prefill_s", "decode_joules", "decode_s", "decode_tokens", "round",
                 "judge.joules", "judge.tokens_in", "judge.tokens_out", "judge.latency_s")
TEXT_FIELDS = ("query_id", "domain", "split", "model", "accelerator", "benchmark", "system", "meter", "provenance",
               "energy_domain", "energy_basis", "token_source", "phase_split", "correct_strict", "strict_protocol",
               "meter_flags", "energy_parts", "judge.judge", "judge.energy_provenance")
FLAG_FIELDS = ("correct", "unscorable", "truncated", "correct_strict", "error", "meter_flags", "energy_parts",
               "judge", "strict_protocol", "judge.cached", "judge.unscorable")
#: fields whose absence differs from null (older files lack them; null says "not known")
PRESENCE_FIELDS = ("ttft_s",)
AGGREGATED_FIELDS = NUMBER_FIELDS + FLAG_FIELDS + TEXT_FIELDS
#: what a capturing table reads from each record as it arrives (each field once)
CAPTURED_FIELDS = tuple(dict.fromkeys(AGGREGATED_FIELDS))
#: a record with any of these set is kept whole: the few analyses that read more than columns read them
KEEP_WHOLE_WHEN = ("error",)


def tuple_of_flags(value: Any) -> tuple[str, ...]:
    """``meter_flags`` as a label: the flags in order (none: an empty tuple)."""
    if not value or not isinstance(value, (list, tuple)):
        return ()
    return tuple(map(str, value))


def tuple_of_parts(value: Any) -> tuple[tuple[Any, Any, Any], ...]:
    """``energy_parts`` as a label: (sensor, provenance, domain) of each part."""
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple((p.get("sensor"), p.get("provenance"), p.get("domain")) for p in value if isinstance(p, Mapping))


#: nested fields held as hashable labels: field -> the label of a record's value
AS_LABEL: dict[str, Callable[[Any], Any]] = {"meter_flags": tuple_of_flags, "energy_parts": tuple_of_parts}


def field_value(record: Mapping[str, Any], name: str) -> Any:
    """A record's value of a field; ``judge.joules`` reads a field of the record's judge object."""
    if "." in name:
        outer, inner = name.split(".", 1)
        value = record.get(outer)
        return value.get(inner) if isinstance(value, Mapping) else None
    return record.get(name)


class RecordTable:
    """Columns over ``records`` (see the module docstring); ``len(table)`` is the number of records.

    A table made with ``capture=True`` starts empty and takes records one by one (:meth:`append`), reading
    the aggregated fields of each as it arrives: a run's end then makes its columns without reading a
    million dicts again."""

    def __init__(self, records: Iterable[Mapping[str, Any]] = (), *, capture: bool = False):
        self.records: Sequence[Mapping[str, Any]] = records if isinstance(records, (list, tuple)) else list(records)
        self._captured: dict[str, list[Any]] | None = None
        if capture:
            self.records = list(self.records)
            self._captured = {name: [field_value(r, name) for r in self.records] for name in CAPTURED_FIELDS}
            captured = self._captured
            self._plain = [(name, captured[name]) for name in CAPTURED_FIELDS if "." not in name]
            nested: dict[str, list[tuple[str, list[Any]]]] = {}
            for name in CAPTURED_FIELDS:
                if "." in name:
                    outer, inner = name.split(".", 1)
                    nested.setdefault(outer, []).append((inner, captured[name]))
            self._nested = list(nested.items())
        self._count = len(self.records)
        self._numbers: dict[str, np.ndarray] = {}
        self._flags: dict[str, np.ndarray] = {}
        self._present: dict[str, np.ndarray] = {}
        self._raw_codes: dict[str, tuple[np.ndarray, list[Any]]] = {}  # None among the labels: absent or null
        self._codes: dict[tuple[str, Any], tuple[np.ndarray, list[Any]]] = {}
        self._derived: dict[str, Any] = {}
        self._columns_only = False

    def __len__(self) -> int:
        return self._count

    def append(self, record: Mapping[str, Any]) -> None:
        """Add a record to a capturing table (the columns made so far are made again when next asked for)."""
        if self._captured is None:
            raise TypeError("append() is for a table made with capture=True")
        self.records.append(record)  # type: ignore[attr-defined]
        self._count += 1
        get = record.get  # a few microseconds a record: plain fields, then each nested object's fields
        for name, values in self._plain:
            values.append(get(name))
        for outer, fields in self._nested:
            inside = get(outer)
            if not isinstance(inside, Mapping):
                inside = {}
            for inner, values in fields:
                values.append(inside.get(inner))
        self._forget()

    def replace(self, index: int, record: Mapping[str, Any]) -> None:
        """Put another record in place of record ``index`` (e.g. its energy shared out with overlapping ones)."""
        self.records[index] = record  # type: ignore[index]
        if self._captured is not None:
            for name, values in self._captured.items():
                values[index] = field_value(record, name)
        self._forget()

    def reread(self, name: str) -> None:
        """Read a field of every record again: it was set on the records in place (each record's system)."""
        if self._captured is not None and name in self._captured:
            self._captured[name][:] = [field_value(r, name) for r in self.records]  # in place: append() holds it
        self._forget()

    def _forget(self) -> None:
        if self._numbers or self._flags or self._present or self._raw_codes or self._derived:
            self._numbers, self._flags, self._present, self._raw_codes = {}, {}, {}, {}
            self._codes, self._derived = {}, {}

    def numbers(self, name: str) -> np.ndarray:
        """The field as float64; NaN where a record lacks it or holds null."""
        column = self._numbers.get(name)
        if column is None:
            values = self._values(name)
            if values.count(None) == len(values):  # a field no record has (a judge's, the rounds...)
                column = np.full(len(values), np.nan)
                self._numbers[name] = column
                return column
            try:  # the common case, every record has a number (or None: NaN): one C-level conversion
                column = np.array(values, dtype=np.float64)
            except (TypeError, ValueError):
                column = None
            if column is None or column.shape != (len(values),):
                raise ValueError(f"record field {name!r} holds values that are not numbers")
            self._numbers[name] = column
        return column

    def flags(self, name: str) -> np.ndarray:
        """The field's truthiness as bool (absent and null are False)."""
        column = self._flags.get(name)
        if column is None:
            column = np.fromiter(map(bool, self._values(name)), dtype=np.bool_, count=self._count)
            self._flags[name] = column
        return column

    def present(self, name: str) -> np.ndarray:
        """Whether each record has the field at all (null counts as present)."""
        column = self._present.get(name)
        if column is None:
            self._require(name)
            column = np.array([name in record for record in self.records], dtype=np.bool_)
            self._present[name] = column
        return column

    def codes(self, name: str, default: Any = ABSENT) -> tuple[np.ndarray, list[Any]]:
        """(codes, labels) of a text field: ``labels[codes[i]]`` is record i's value (``default`` where absent
        or null); labels in first-seen order."""
        key = (name, default)
        found = self._codes.get(key)
        if found is None:
            raw = self._raw_codes.get(name)
            if raw is None:
                values = self._values(name)
                if name in AS_LABEL:
                    values = list(map(AS_LABEL[name], values))
                raw = self._raw_codes[name] = encode(values)
            codes, labels = raw
            if None in labels:  # absent or null: the default, merged with an equal label
                labels = [default if label is None else label for label in labels]
                if labels.count(default) > 1:
                    codes, labels = merge_equal_labels(codes, labels)
            found = self._codes[key] = (codes, labels)
        return found

    def _require(self, name: str) -> None:
        if self._columns_only:  # a programming error: the field is missing from the lists above
            raise LookupError(f"a table read from a results file holds no column {name!r}; add it to "
                              "pytest_ipw.analysis.table's field lists")

    def _values(self, name: str) -> Sequence[Any]:
        self._require(name)
        if self._captured is not None and name in self._captured:
            return self._captured[name]
        if "." in name:  # a field of a nested object, e.g. judge.joules
            return [field_value(record, name) for record in self.records]
        return [record.get(name) for record in self.records]  # a comprehension: about twice map(methodcaller)

    def distinct(self, *names: str, default: Any = ABSENT, rows: Any = None) -> list[tuple[Any, ...]]:
        """The distinct combinations of text fields among the records (or ``rows`` of them), first-seen order."""
        fields = [self.codes(name, default) for name in names]
        if rows is not None:
            fields = [(codes[rows], labels) for codes, labels in fields]
        if not len(fields[0][0]):
            return []
        _, _, first = combine(*((codes, len(labels)) for codes, labels in fields))
        return [tuple(labels[codes[position]] for codes, labels in fields) for position in first.tolist()]

    def derived(self, name: str, make: Callable[["RecordTable"], Any]) -> Any:
        """A value computed from this table once (e.g. each record's system), kept with its columns."""
        if name not in self._derived:
            self._derived[name] = make(self)
        return self._derived[name]

    def view(self) -> "TableRecords":
        """The records as a sequence that comes with this table (``as_table`` of it gives this table back)."""
        records = self.records
        return records if isinstance(records, TableRecords) else WholeRecords(self)

    def with_labels(self, relabel: Mapping[str, Callable[[Any], Any]],
                    derived: Mapping[str, Any] | None = None) -> "RecordTable":
        """The same records under other labels of some text fields (``relabel``: field -> new label of an old
        one), sharing every other column; ``derived`` replaces derived values (see :meth:`derived`). Its
        records are the originals with the new labels (:class:`RelabelledRecords`)."""
        table = object.__new__(RecordTable)
        table.__dict__.update(self.__dict__)
        table._raw_codes = dict(self._raw_codes)
        table._codes = {key: found for key, found in self._codes.items() if key[0] not in relabel}
        table._derived = dict(derived or {})
        for name, new_label in relabel.items():
            self.codes(name)  # encodes the field once
            codes, labels = self._raw_codes[name]
            mapped = [None if label is None else new_label(label) for label in labels]
            table._raw_codes[name] = merge_equal_labels(codes, mapped) if len(set(mapped)) < len(mapped) \
                else (codes, mapped)
        table.records = RelabelledRecords(table, self.records, tuple(relabel))
        return table


class TableRecords(Sequence[Mapping[str, Any]]):
    """Records that come with their table (``as_table`` of them gives it back): a view, each record made when
    it is asked for by :meth:`_record`."""

    def __init__(self, table: RecordTable):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("record index out of range")
        return self._record(index)

    def _record(self, index: int) -> Mapping[str, Any]:
        raise NotImplementedError


class WholeRecords(TableRecords):
    """A table's own records, carried with it (:meth:`RecordTable.view`), so that every function handed them
    reads the same columns instead of making its own."""

    def _record(self, index: int) -> Mapping[str, Any]:
        return self.table.records[index]


class PartialRecords(TableRecords):
    """The records of a table read from a results file: whole where kept (the first ones, and those the
    analyses read whole: :data:`KEEP_WHOLE_WHEN`), else rebuilt from the columns (the fields they hold)."""

    def __init__(self, table: RecordTable, kept: Mapping[int, Mapping[str, Any]]):
        super().__init__(table)
        self._kept = kept

    def _record(self, index: int) -> Mapping[str, Any]:
        whole = self._kept.get(index)
        return whole if whole is not None else self._rebuild(index)

    def _rebuild(self, index: int) -> dict[str, Any]:
        table = self.table
        record: dict[str, Any] = {}
        for name in TEXT_FIELDS:
            codes, labels = table._raw_codes[name]
            if labels[codes[index]] is not None and "." not in name and name not in AS_LABEL:
                record[name] = labels[codes[index]]
        record["meter_flags"] = list(table._raw_codes["meter_flags"][1][table._raw_codes["meter_flags"][0][index]])
        for name in NUMBER_FIELDS:
            value = table._numbers[name][index]
            if value == value and "." not in name:  # not NaN
                record[name] = value.item()
        for name in ("correct", "unscorable", "truncated"):
            record[name] = bool(table._flags[name][index])
        return record


class RelabelledRecords(TableRecords):
    """The records of :meth:`RecordTable.with_labels`: each original record with the table's labels of the
    relabelled fields (and its ``system``, where the table derives one)."""

    def __init__(self, table: RecordTable, originals: Sequence[Mapping[str, Any]], fields: Sequence[str]):
        super().__init__(table)
        self._originals = originals
        self._fields = fields

    def _record(self, index: int) -> Mapping[str, Any]:
        record = dict(self._originals[index])
        for name in self._fields:
            codes, labels = self.table._raw_codes[name]
            if labels[codes[index]] is not None:
                record[name] = labels[codes[index]]
        if "system" in self.table._derived:
            codes, labels = self.table._derived["system"]
            record["system"] = labels[codes[index]]
        return record


def label_counts(table: RecordTable, name: str) -> list[tuple[Any, int]]:
    """Each label of a coded field with the number of records that have it (first-seen order)."""
    codes, labels = table.codes(name)
    counts = np.bincount(codes, minlength=len(labels)) if len(labels) else []
    return [(label, int(n)) for label, n in zip(labels, counts) if n]


def concatenate(parts: Iterable[RecordTable], keep_first: int = 0) -> RecordTable:
    """One table holding the columns of every field the aggregates read (the field lists above) from tables
    read one chunk of a file at a time, so that only one chunk's records are ever dicts at once. Records
    are kept whole where the analyses read them whole, and the first ``keep_first`` of them."""
    numbers: dict[str, list[np.ndarray]] = {name: [] for name in NUMBER_FIELDS}
    flags: dict[str, list[np.ndarray]] = {name: [] for name in FLAG_FIELDS}
    present: dict[str, list[np.ndarray]] = {name: [] for name in PRESENCE_FIELDS}
    codes: dict[str, list[np.ndarray]] = {name: [] for name in TEXT_FIELDS}
    labels: dict[str, dict[Any, int]] = {name: {} for name in TEXT_FIELDS}
    kept: dict[int, Mapping[str, Any]] = {}
    count = 0
    for part in parts:
        for name in NUMBER_FIELDS:
            numbers[name].append(part.numbers(name))
        for name in FLAG_FIELDS:
            flags[name].append(part.flags(name))
        for name in PRESENCE_FIELDS:
            present[name].append(part.present(name))
        for name in TEXT_FIELDS:
            part.codes(name)  # encodes the field once
            part_codes, part_labels = part._raw_codes[name]
            index = labels[name]
            translate = np.array([index.setdefault(label, len(index)) for label in part_labels], dtype=CODE)
            codes[name].append(translate[part_codes] if len(part_labels) else part_codes)
        whole = np.zeros(len(part), dtype=np.bool_)
        whole[:max(0, keep_first - count)] = True
        for name in KEEP_WHOLE_WHEN:
            whole |= part.flags(name)
        for position in np.flatnonzero(whole).tolist():
            kept[count + position] = part.records[position]
        count += len(part)

    def joined(columns: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(columns) if columns else np.zeros(0, dtype=dtype)

    return columns_table(count, {name: joined(columns, np.float64) for name, columns in numbers.items()},
                         {name: joined(columns, np.bool_) for name, columns in flags.items()},
                         {name: joined(columns, np.bool_) for name, columns in present.items()},
                         {name: (joined(codes[name], CODE), list(labels[name])) for name in TEXT_FIELDS}, kept)


def columns_table(count: int, numbers: Mapping[str, np.ndarray], flags: Mapping[str, np.ndarray],
                  present: Mapping[str, np.ndarray], codes: Mapping[str, tuple[np.ndarray, list[Any]]],
                  kept: Mapping[int, Mapping[str, Any]]) -> RecordTable:
    """A table of ``count`` records held only as columns (one for every field of the lists above; text as
    codes and first-seen labels, None among them for absent or null), with the records in ``kept`` whole."""
    missing = [name for names, held in ((NUMBER_FIELDS, numbers), (FLAG_FIELDS, flags), (TEXT_FIELDS, codes),
                                        (PRESENCE_FIELDS, present)) for name in names if name not in held]
    if missing:
        raise ValueError(f"a columns-only table needs every aggregated field; missing {', '.join(missing)}")
    table = RecordTable(())
    table._count = count
    table._columns_only = True
    table._numbers = {name: _compact(column) for name, column in numbers.items()}
    table._flags = {name: _compact(column) for name, column in flags.items()}
    table._present = {name: _compact(column) for name, column in present.items()}
    table._raw_codes = {name: (_compact(column), labels) for name, (column, labels) in codes.items()}
    table.records = PartialRecords(table, kept)
    return table


def _compact(column: np.ndarray) -> np.ndarray:
    """A column of one repeated value as a read-only view of that value (no memory a record): many fields
    are absent from a whole run (a judge's, the rounds of --ipw-repeat, the prefill/decode split)."""
    if not len(column):
        return column
    first = column[:1].copy()  # a copy: a view would keep the whole column alive
    same = np.isnan(column).all() if column.dtype.kind == "f" and np.isnan(first[0]) else (column == first[0]).all()
    return np.broadcast_to(first, column.shape) if same else column


def encode(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Codes and first-seen labels of hashable ``values``."""
    labels = list(dict.fromkeys(values))  # few distinct values: C-level, first-seen order
    if len(labels) <= 1:  # one value throughout (one model, one meter...): no per-record lookup
        return np.zeros(len(values), dtype=CODE), labels
    number = {label: code for code, label in enumerate(labels)}
    return np.fromiter(map(number.__getitem__, values), dtype=CODE, count=len(values)), labels


def merge_equal_labels(codes: np.ndarray, labels: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """The same codes with equal labels made one (first-seen order kept)."""
    distinct = list(dict.fromkeys(labels))
    translate = np.array([distinct.index(label) for label in labels], dtype=CODE)
    return translate[codes], distinct


def as_table(records: "Iterable[Mapping[str, Any]] | RecordTable") -> RecordTable:
    """``records`` as a table (a table, or the records of one, give that table: its columns are shared)."""
    if isinstance(records, RecordTable):
        return records
    if isinstance(records, TableRecords):
        return records.table
    return RecordTable(records)  # type: ignore[arg-type]


def last_positions(codes: np.ndarray, size: int) -> np.ndarray:
    """For codes 0..size-1: the position of each code's last record."""
    last = np.zeros(size, dtype=np.int64)
    np.maximum.at(last, codes, np.arange(len(codes)))
    return last


def group_positions(codes: np.ndarray, size: int) -> list[np.ndarray]:
    """For codes 0..size-1: the positions of each code's records, in record order."""
    if size == 1:
        return [np.arange(len(codes))]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(size + 1))
    return [order[bounds[g]:bounds[g + 1]] for g in range(size)]


def combine(*code_arrays: tuple[np.ndarray, int]) -> tuple[np.ndarray, int, np.ndarray]:
    """One code per distinct combination of several coded fields, numbered in first-seen order:
    (codes, number of combinations, position of each combination's first record)."""
    combined = np.zeros(len(code_arrays[0][0]), dtype=np.int64)
    for codes, size in code_arrays:
        combined = combined * max(1, size) + codes
    _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)], len(first), first[order]
