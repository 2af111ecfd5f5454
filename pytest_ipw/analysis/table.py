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
"""

from __future__ import annotations

from operator import methodcaller
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

#: marks an absent field among a text column's labels (``codes(name, default=...)`` replaces it)
ABSENT = None


class RecordTable:
    """Columns over ``records`` (see the module docstring); ``len(table)`` is the number of records."""

    def __init__(self, records: Iterable[Mapping[str, Any]]):
        self.records = records if isinstance(records, (list, tuple)) else list(records)
        self._numbers: dict[str, np.ndarray] = {}
        self._flags: dict[str, np.ndarray] = {}
        self._codes: dict[tuple[str, Any], tuple[np.ndarray, list[Any]]] = {}
        self._derived: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.records)

    def numbers(self, name: str) -> np.ndarray:
        """The field as float64; NaN where a record lacks it or holds null."""
        column = self._numbers.get(name)
        if column is None:
            values = self._values(name)
            try:  # the common case, every record has a number: one C-level conversion
                column = np.array(values, dtype=np.float64)
            except (TypeError, ValueError):
                nan = float("nan")
                column = np.fromiter((nan if v is None else v for v in values), dtype=np.float64, count=len(values))
            if column.shape != (len(values),):
                raise ValueError(f"record field {name!r} holds values that are not numbers")
            self._numbers[name] = column
        return column

    def flags(self, name: str) -> np.ndarray:
        """The field's truthiness as bool (absent and null are False)."""
        column = self._flags.get(name)
        if column is None:
            column = np.fromiter(map(bool, self._values(name)), dtype=np.bool_, count=len(self.records))
            self._flags[name] = column
        return column

    def codes(self, name: str, default: Any = ABSENT) -> tuple[np.ndarray, list[Any]]:
        """(codes, labels) of a text field: ``labels[codes[i]]`` is record i's value (``default`` where absent
        or null); labels in first-seen order."""
        key = (name, default)
        found = self._codes.get(key)
        if found is None:
            codes, labels = encode(self._values(name))
            if None in labels:  # absent or null: the default, merged with an equal label
                labels = [default if label is None else label for label in labels]
                if labels.count(default) > 1:
                    codes, labels = _merge_equal_labels(codes, labels)
            found = self._codes[key] = (codes, labels)
        return found

    def _values(self, name: str) -> list[Any]:
        return list(map(methodcaller("get", name), self.records))

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


def encode(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Codes and first-seen labels of hashable ``values``."""
    labels = list(dict.fromkeys(values))  # few distinct values: C-level, first-seen order
    number = {label: code for code, label in enumerate(labels)}
    return np.fromiter(map(number.__getitem__, values), dtype=np.int64, count=len(values)), labels


def _merge_equal_labels(codes: np.ndarray, labels: list[Any]) -> tuple[np.ndarray, list[Any]]:
    distinct = list(dict.fromkeys(labels))
    translate = np.array([distinct.index(label) for label in labels], dtype=np.int64)
    return translate[codes], distinct


def as_table(records: "Iterable[Mapping[str, Any]] | RecordTable") -> RecordTable:
    """``records`` as a table (a table is returned as it is, so its columns are shared)."""
    return records if isinstance(records, RecordTable) else RecordTable(records)  # type: ignore[arg-type]


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
