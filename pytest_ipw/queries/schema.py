"""Query sets: the schema, loading, validation and selection.

One query is one prompt with a verifiable reference answer. Files are JSONL (one object per line,
parsed here for exact values and line numbers), CSV (the standard library's reader, every cell text) or
Parquet (pyarrow, with explicit column types); the columns are documented in docs/datasets.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

from pytest_ipw.core.errors import IPWUsageError

SCORERS = ("exact", "numeric", "choice", "regex", "judge", "math")  # math: needs the math-verify extra
SPLITS = ("chat", "reasoning")
LETTERS_FOR_CHOICES = "ABCDEFGHIJ"  # up to 10 options (MMLU-Pro)
REQUIRED_FIELDS = ("id", "prompt", "answer", "domain", "split", "scorer")
SUPPORTED_SUFFIXES = {".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}

DEFAULT_QUERY_SET = Path(__file__).resolve().parent.parent / "data" / "queries.jsonl"


@dataclass(frozen=True)
class Query:
    """One benchmark query. ``answer`` is the reference; how it is compared depends on ``scorer``."""

    id: str
    prompt: str
    answer: str
    domain: str
    split: str
    scorer: str
    choices: tuple[str, ...] = ()
    tolerance: float | None = None
    difficulty: str | None = None
    aliases: tuple[str, ...] = field(default=())
    source: str | None = None  # the data set it came from, in a mix of several (weights apply per source)
    protocol: str | None = None  # official strict extraction (a key of protocols.PROTOCOLS), from a hub mapping

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "answer": self.answer,
            "domain": self.domain,
            "split": self.split,
            "scorer": self.scorer,
            "choices": list(self.choices),
            "tolerance": self.tolerance,
            "difficulty": self.difficulty,
            "aliases": list(self.aliases),
            "source": self.source,
            "protocol": self.protocol,
        }


@dataclass
class SkippedRows:
    """Rows left out of a query set, and why: counted, and named up to :attr:`NAMED` rows, for the report and
    ``settings.dataset_sources[].skipped``. Hub data sets always skip what their mapping cannot use; a
    user's own file only with ``--ipw-skip-invalid`` (otherwise its first bad row is an error)."""

    NAMED: ClassVar[int] = 50  # rows named individually; the rest are counted by reason
    REASONS: ClassVar[int] = 20  # distinct reasons kept; further ones are counted as "other reasons"
    count: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    rows: list[dict[str, str]] = field(default_factory=list)

    def add(self, row: str, reason: str) -> None:
        """Count one left-out row: ``row`` names it (its id and place), ``reason`` says why."""
        self.count += 1
        key = reason if reason in self.by_reason or len(self.by_reason) < self.REASONS else "other reasons"
        self.by_reason[key] = self.by_reason.get(key, 0) + 1
        if len(self.rows) < self.NAMED:
            self.rows.append({"row": row, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "by_reason": dict(self.by_reason), "rows": list(self.rows),
                "rows_named": len(self.rows)}


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value == ""


def _as_str_tuple(value: Any, name: str) -> tuple[str, ...]:
    if _is_missing(value):
        return ()
    if isinstance(value, str):
        # CSV cannot hold lists: accept a JSON list or a "|"-separated string there.
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"'{name}' is not a valid JSON list ({exc.msg})") from None
        else:
            value = text.split("|")
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"'{name}' must be a list of strings, got {type(value).__name__}")
    return tuple(str(v) for v in value)


def query_from_row(row: dict[str, Any], default_source: str | None = None) -> Query:
    """Build a validated :class:`Query` from one data set row; raises ``ValueError`` naming the field.
    ``default_source`` is its :attr:`Query.source` where the row names none."""
    missing = [name for name in REQUIRED_FIELDS if _is_missing(row.get(name))]
    if missing:
        raise ValueError(f"missing required field(s): {', '.join(missing)}")
    scorer = str(row["scorer"]).strip()
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r} (expected one of: {', '.join(SCORERS)})")
    split = str(row["split"]).strip()
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of: {', '.join(SPLITS)})")
    choices = _as_str_tuple(row.get("choices"), "choices")
    if scorer == "choice" and len(choices) < 2:
        raise ValueError("scorer 'choice' needs a 'choices' list with at least two options")
    if scorer == "choice" and len(choices) > len(LETTERS_FOR_CHOICES):
        raise ValueError(f"scorer 'choice' supports up to {len(LETTERS_FOR_CHOICES)} options (A-J), got {len(choices)}")
    tolerance = row.get("tolerance")
    if _is_missing(tolerance):
        tolerance = None
    else:
        try:
            tolerance = float(tolerance)
        except (TypeError, ValueError):
            raise ValueError(f"'tolerance' must be a number, got {tolerance!r}") from None
        if tolerance < 0:
            raise ValueError(f"'tolerance' must not be negative, got {tolerance}")
    answer = row["answer"]
    if not isinstance(answer, str):
        answer = json.dumps(answer) if isinstance(answer, (list, dict)) else str(answer)
    if scorer == "numeric":
        try:
            float(answer.replace(",", ""))
        except ValueError:
            raise ValueError(f"scorer 'numeric' needs a numeric answer, got {answer!r}") from None
    if scorer == "choice":
        letters = [chr(ord("A") + i) for i in range(len(choices))]
        if answer.strip().upper() not in letters:
            raise ValueError(f"scorer 'choice' needs the answer to be one of the letters {', '.join(letters)}, got {answer!r}")
        answer = answer.strip().upper()
    if scorer == "regex":
        import re

        try:
            re.compile(answer)
        except re.error as exc:
            raise ValueError(f"answer is not a valid regular expression ({exc})") from None
    difficulty = row.get("difficulty")
    protocol = None if _is_missing(row.get("protocol")) else str(row["protocol"]).strip()
    if protocol is not None:
        from pytest_ipw.queries.protocols import PROTOCOLS

        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r} (expected one of: {', '.join(PROTOCOLS)})")
    return Query(
        id=str(row["id"]).strip(),
        prompt=str(row["prompt"]),
        answer=answer,
        domain=str(row["domain"]).strip(),
        split=split,
        scorer=scorer,
        choices=choices,
        tolerance=tolerance,
        difficulty=None if _is_missing(difficulty) else str(difficulty),
        aliases=_as_str_tuple(row.get("aliases"), "aliases"),
        source=default_source if _is_missing(row.get("source")) else str(row["source"]),
        protocol=protocol,
    )


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows of a JSONL file and the line number of each; a malformed line is an error naming it.

    JSONL is parsed here rather than by `datasets`: its reader gives no line numbers, and it re-encodes
    a column that mixes types (an answer "B" next to an answer 42) as JSON text, corrupting answers.
    """
    from pytest_ipw.core.files import jsonl_objects

    numbered = jsonl_objects(path.read_text(encoding="utf-8", errors="replace"), path, "query set")
    return [row for _, row in numbered], [number for number, _ in numbered]


def read_csv_rows(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows of a CSV file as text (an id "007" stays "007"), an empty cell as None, and the line each row
    starts on. Read with the standard library: no third-party package, nothing in the environment changed."""
    import csv

    rows: list[dict[str, Any]] = []
    starts: list[int] = []
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return [], []
            while True:
                start = reader.line_num + 1
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                if not cells:
                    continue  # a blank line
                if len(cells) > len(header):
                    raise IPWUsageError(f"query set {path}, line {start}: {len(cells)} fields but the header has "
                                        f"{len(header)}; quote fields that contain commas")
                rows.append({name: (cells[i] if i < len(cells) and cells[i] != "" else None)
                             for i, name in enumerate(header)})
                starts.append(start)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise IPWUsageError(f"query set {path} could not be read as CSV (UTF-8): {exc}") from None
    return rows, starts


def read_parquet_rows(path: Path, as_text: bool = False) -> list[dict[str, Any]]:
    """Rows of a Parquet file (pyarrow, the [parquet] extra). ``as_text`` reads every column as text, list
    columns as lists of text and ``tolerance`` as a number, so that a float column holding 1990 and 2.5
    gives "1990", not "1990.0"."""
    from pytest_ipw.core.extras import require

    pa = require("pyarrow", f"reading the Parquet file {path}")
    pq = require("pyarrow.parquet", f"reading the Parquet file {path}")
    try:
        table = pq.read_table(path)
        if as_text:
            types = {"tolerance": pa.float64()}
            fields = []
            for column in table.schema:
                listed = pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
                fields.append(pa.field(column.name, types.get(column.name, pa.list_(pa.string()) if listed
                                                              else pa.string())))
            table = table.cast(pa.schema(fields))
        return table.to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise IPWUsageError(f"query set {path} could not be read: {exc.__class__.__name__}: {exc}") from None


def query_file_kind(path: Path) -> str:
    """The reader for a local query file ("json", "csv" or "parquet"); a missing or unknown file is an error."""
    if not path.is_file():
        raise IPWUsageError(f"query set {path} does not exist; pass an existing file to --ipw-dataset")
    builder = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if builder is None:
        raise IPWUsageError(f"query set {path}: unsupported file type {path.suffix!r}; use .jsonl, .csv or .parquet")
    return builder


def load_queries(path: str | os.PathLike[str] | None = None, skipped: SkippedRows | None = None,
                 source: str | None = None) -> list[Query]:
    """Load and validate a query set file. Every problem is an :class:`IPWUsageError` naming file and line,
    except that with ``skipped`` (``--ipw-skip-invalid``) invalid rows and repeated ids are left out and
    counted there instead. ``source`` is the :attr:`Query.source` of rows that name none."""
    path = Path(path) if path is not None else DEFAULT_QUERY_SET
    builder = query_file_kind(path)
    if builder == "json":
        rows, line_numbers = _read_jsonl(path)
    elif builder == "csv":
        rows, line_numbers = read_csv_rows(path)
    else:
        rows, line_numbers = read_parquet_rows(path, as_text=True), None
    if not rows:
        raise IPWUsageError(f"query set {path} has no rows")
    queries: list[Query] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        place = _row_place(index, line_numbers, path)
        try:
            query = query_from_row(row, source)
        except ValueError as exc:
            if skipped is not None:
                skipped.add(row_label(row.get("id") if isinstance(row, dict) else None, place), str(exc))
                continue
            raise IPWUsageError(f"query set {path}, {place}: {exc}. Fix that row, or pass --ipw-skip-invalid to "
                                "leave invalid rows out (they are counted and named in the report).") from None
        if query.id in seen:
            if skipped is not None:
                skipped.add(row_label(query.id, place), "duplicate id (the first is kept)")
                continue
            raise IPWUsageError(
                f"query set {path}, {place}: duplicate id {query.id!r} (first at {_row_place(seen[query.id], line_numbers, path)}). "
                "Ids must be unique."
            )
        seen[query.id] = index
        queries.append(query)
    if not queries:
        raise IPWUsageError(f"query set {path} has no valid rows ({skipped_summary(skipped)}); fix the file")
    return queries


def skipped_summary(skipped: SkippedRows | None) -> str:
    """ "3 skipped: 2 missing required field(s): answer; 1 duplicate id" (for messages and report lines)."""
    if skipped is None or not skipped.count:
        return "none skipped"
    reasons = "; ".join(f"{count} {reason}" for reason, count in skipped.by_reason.items())
    return f"{skipped.count} skipped: {reasons}"


def row_label(ident: Any, place: str) -> str:
    """How a skipped row is named: "ID (line 7)", or only its place when it has no id."""
    return place if _is_missing(ident) else f"{ident} ({place})"


def _row_place(index: int, line_numbers: list[int] | None, path: Path) -> str:
    if line_numbers is not None and index < len(line_numbers):
        if path.suffix.lower() == ".csv":
            return f"line {line_numbers[index]} (row {index + 1})"  # line 1 is the header
        return f"line {line_numbers[index]}"
    return f"row {index + 1}"


def select_queries(
    queries: Sequence[Query],
    *,
    domains: Iterable[str] | None = None,
    limit: int | None = None,
    source: str = "query set",
    seed: int | None = None,
    weights: Mapping[str, float] | None = None,
) -> list[Query]:
    """Filter by domain, then keep ``limit`` queries stratified by domain (deterministic).

    Domains take turns (round-robin), so ``--ipw-limit`` samples every domain. Within a domain queries
    keep file order, or a random order fixed by ``seed`` (``--ipw-sample-seed``). With ``weights`` (a mix
    of data sets, keyed by :attr:`Query.source`) the limit is first shared out between the sources in
    proportion to their weights (a source with too few queries passes its remainder on), then each
    source's share is stratified by domain as above.
    """
    selected = list(queries)
    if domains:
        wanted = {d.strip() for d in domains if d.strip()}
        known = sorted({q.domain for q in queries})
        unknown = sorted(wanted - set(known))
        if unknown:
            raise IPWUsageError(
                f"--ipw-domains names {', '.join(unknown)}, which {source} does not have; "
                f"its domains are: {', '.join(known)}"
            )
        selected = [q for q in selected if q.domain in wanted]
    if limit is not None and limit < 1:
        raise IPWUsageError(f"--ipw-limit must be at least 1, got {limit}")
    if weights:
        by_source: dict[str, list[Query]] = {}
        for query in selected:
            by_source.setdefault(query.source or "", []).append(query)
        ordered = {name: _round_robin_by_domain(group, seed, name) for name, group in by_source.items()}
        if limit is not None:
            counts = allocate(limit, {name: weights.get(name, 0.0) for name in ordered},
                              {name: len(group) for name, group in ordered.items()})
            ordered = {name: group[: counts[name]] for name, group in ordered.items()}
        selected = _interleave(list(ordered.values()))
    elif limit is not None or seed is not None:
        selected = _round_robin_by_domain(selected, seed, "")
        if limit is not None:
            selected = selected[:limit]
    if not selected:
        raise IPWUsageError(f"the selection from {source} is empty; widen --ipw-domains or --ipw-limit")
    return selected


def allocate(total: int, weights: Mapping[str, float], capacity: Mapping[str, int]) -> dict[str, int]:
    """Share ``total`` between keys in proportion to ``weights`` (largest remainder), never above a key's
    ``capacity``; what a full key cannot take goes to the others. Deterministic (ties by name)."""
    counts = {key: 0 for key in weights}
    active = sorted(key for key in weights if weights[key] > 0 and capacity.get(key, 0) > 0)
    while active:
        remaining = total - sum(counts.values())
        if remaining <= 0:
            break
        weight_sum = sum(weights[key] for key in active)
        shares = {key: remaining * weights[key] / weight_sum for key in active}
        give = {key: min(int(shares[key]), capacity[key] - counts[key]) for key in active}
        spare = remaining - sum(give.values())
        for key in sorted(active, key=lambda k: (-(shares[k] - int(shares[k])), k)):
            if spare <= 0:
                break
            if counts[key] + give[key] < capacity[key]:
                give[key] += 1
                spare -= 1
        if not any(give.values()):
            break
        for key in active:
            counts[key] += give[key]
        active = [key for key in active if counts[key] < capacity[key]]
    return counts


def _interleave(columns: Sequence[Sequence[Query]]) -> list[Query]:
    ordered: list[Query] = []
    for position in range(max((len(c) for c in columns), default=0)):
        ordered.extend(column[position] for column in columns if position < len(column))
    return ordered


def _round_robin_by_domain(queries: Sequence[Query], seed: int | None = None, salt: str = "") -> list[Query]:
    """Interleave domains so that ``--ipw-limit N`` samples every domain, in file order within each
    domain, or shuffled with ``seed`` (seeded per source and domain, so adding a data set to a mix does
    not change what is drawn from the others)."""
    by_domain: dict[str, list[Query]] = {}
    for query in queries:
        by_domain.setdefault(query.domain, []).append(query)
    if seed is not None:
        import random

        for domain, group in by_domain.items():
            random.Random(f"{seed}:{salt}:{domain}").shuffle(group)
    return _interleave(list(by_domain.values()))
