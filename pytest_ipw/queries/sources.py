"""Where queries come from: ``--ipw-dataset=SPEC``.

- a query-set file in README's schema (JSONL, CSV, Parquet): ``queries.jsonl``;
- any local JSONL/CSV/Parquet file with a column mapping: ``data.parquet`` + ``--ipw-columns=prompt=question,answer=label``;
- a Hugging Face hub data set through ``datasets``: ``hf:TIGER-Lab/MMLU-Pro``, with options after ``?``:
  ``hf:Idavidrein/gpqa?config=gpqa_main&split=train&revision=REV&mapping=gpqa``. Built-in mappings know
  MMLU-Pro, SuperGPQA, GPQA, NaturalReasoning, WildChat and GSM8K (see :data:`BUILTIN_MAPPINGS`); a
  local directory laid out like the hub repository (``hf:/mirror/TIGER-Lab/MMLU-Pro``) works the same;
- a mix of several: ``mix:hf:TIGER-Lab/MMLU-Pro*2,hf:openai/gsm8k,local.jsonl``. With ``--ipw-limit=N``
  the N queries are shared out by weight (``*W``, default 1), and drawn in each data set stratified by
  domain, in a random order fixed by ``--ipw-sample-seed`` (like the study's mixed query sample).

Every source ends up as :class:`~pytest_ipw.queries.Query` objects; selection (domains, limit, seed,
weights) is :func:`pytest_ipw.queries.select_queries`. ``datasets`` (the [hub] extra) is imported only here,
lazily, and only for ``hf:`` sources: local files are read without it.

Real hub data has rows a mapping cannot turn into a valid query (MMLU-Pro questions left with one option):
they are left out, counted and named in ``QuerySet.sources[].skipped`` and the report, and the run goes
on; a user's own file stays strict unless ``--ipw-skip-invalid``. A built-in mapping also names its data
set's official answer extraction (:mod:`pytest_ipw.queries.protocols`), which becomes the strict reading.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.queries.schema import (
    DEFAULT_QUERY_SET,
    LETTERS_FOR_CHOICES,
    Query,
    SkippedRows,
    load_queries,
    query_file_kind,
    query_from_row,
    row_label,
    skipped_summary,
)

#: fields a column mapping can fill (README "Query set schema")
MAPPABLE = ("id", "prompt", "answer", "choices", "domain", "split", "scorer", "tolerance", "difficulty", "aliases")
CHOICE_INSTRUCTION = 'Finish your answer with "The answer is (X)" where X is the letter of the correct option.'
MATH_INSTRUCTION = 'Finish your answer with "The answer is N" where N is the final number.'
# GSM8K's own answer format, which its official extraction reads (protocols.PROTOCOLS["gsm8k"])
GSM8K_INSTRUCTION = 'Finish your answer with a last line "#### N" where N is the final number.'


@dataclass
class QuerySet:
    """The loaded queries, how to label them, and per-source weights for a mix."""

    queries: list[Query]
    label: str
    weights: dict[str, float] | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)  # what each source was (for the results)


# --------------------------------------------------------------------------------------------------
# built-in mappings of hub data sets (column names checked against the hub repositories' cards)
# --------------------------------------------------------------------------------------------------


class RowSkipped(ValueError):
    """A hub row that a built-in mapping leaves out, and why (counted and named in the report, never silent)."""


@dataclass(frozen=True)
class HubMapping:
    """How rows of one hub data set become queries."""

    name: str  # short name: query id prefix and mix source name
    repo: str  # the hub id it was written for
    columns: tuple[str, ...]  # columns it reads (checked before mapping: a schema change is one clear error)
    convert: Callable[[dict[str, Any], int], dict[str, Any]]  # row, index -> README-schema row; RowSkipped to leave out
    config: str | None = None
    split: str | None = None
    id_column: str | None = None  # names a skipped row in the report
    protocol: str | None = None  # the data set's official strict extraction (pytest_ipw.queries.protocols)


def _lettered(question: str, options: list[str], instruction: str = CHOICE_INSTRUCTION) -> str:
    lines = [question.strip()] + [f"{LETTERS_FOR_CHOICES[i]}) {str(o).strip()}" for i, o in enumerate(options)]
    return "\n".join(lines + [instruction])


def _mmlu_pro(row: dict[str, Any], index: int) -> dict[str, Any]:
    # MMLU-Pro: question_id, question, options (up to 10), answer (letter), answer_index, cot_content, category, src
    options = [str(o) for o in row["options"]]
    while options and options[-1].strip() == "N/A" and len(options) - 1 > int(row["answer_index"]):
        options.pop()  # some copies pad to 10 options with "N/A"
    if len(options) < 2:  # some hub revisions hold questions left with one real option and "N/A" padding
        raise RowSkipped(f"fewer than two options once 'N/A' padding is dropped ({len(options)})")
    if not 0 <= int(row["answer_index"]) < len(options):
        raise RowSkipped(f"answer_index {row['answer_index']} is not one of its {len(options)} options")
    return {"id": f"mmlu-pro-{row['question_id']}", "prompt": _lettered(row["question"], options),
            "answer": LETTERS_FOR_CHOICES[int(row["answer_index"])], "choices": options, "domain": row["category"],
            "split": "reasoning", "scorer": "choice"}


def _supergpqa(row: dict[str, Any], index: int) -> dict[str, Any]:
    # SuperGPQA: uuid, question, options, answer (text), answer_letter, discipline, field, subfield, difficulty
    options = [str(o) for o in row["options"]]
    return {"id": f"supergpqa-{row['uuid']}", "prompt": _lettered(row["question"], options),
            "answer": str(row["answer_letter"]).strip(), "choices": options, "domain": row["discipline"],
            "split": "reasoning", "scorer": "choice", "difficulty": row.get("difficulty")}


def _gpqa(row: dict[str, Any], index: int) -> dict[str, Any]:
    # GPQA: Question, Correct Answer, Incorrect Answer 1..3, Explanation, High-level domain, Subdomain, Record ID.
    # The correct answer comes first in the file: shuffle the options, seeded by the record id, so that the
    # letter is stable across runs and machines and not always A.
    record = str(row.get("Record ID") or index)
    options = [row["Correct Answer"], row["Incorrect Answer 1"], row["Incorrect Answer 2"], row["Incorrect Answer 3"]]
    if any(o is None or not str(o).strip() for o in options):  # would become an option "None" or ""
        raise RowSkipped("an answer option is empty")
    options = [str(o).strip() for o in options]
    order = list(range(4))
    random.Random(int(hashlib.sha256(record.encode()).hexdigest()[:16], 16)).shuffle(order)
    shuffled = [options[i] for i in order]
    return {"id": f"gpqa-{record}", "prompt": _lettered(row["Question"], shuffled),
            "answer": LETTERS_FOR_CHOICES[order.index(0)], "choices": shuffled,
            "domain": row.get("High-level domain") or "gpqa", "split": "reasoning", "scorer": "choice"}


def _natural_reasoning(row: dict[str, Any], index: int) -> dict[str, Any]:
    # NaturalReasoning: question, reference_answer, responses [{response_model, response}]. Free-form
    # references: a judge compares the answer with the reference.
    reference = row.get("reference_answer")
    if not reference or not str(reference).strip():
        raise RowSkipped("no reference answer")
    return {"id": f"natural-reasoning-{index + 1:07d}", "prompt": row["question"], "answer": str(reference),
            "domain": "natural_reasoning", "split": "reasoning", "scorer": "judge"}


def _wildchat(row: dict[str, Any], index: int) -> dict[str, Any]:
    # WildChat: conversation [{role, content, language, toxic, redacted, ...}], conversation_hash (1M) or
    # conversation_id (older releases). The first user turn is the query; the assistant's reply in the data
    # set is the reference the judge compares with. Toxic or empty openings are skipped.
    turns = row.get("conversation") or []
    user = next((t for t in turns if t.get("role") == "user"), None)
    reply = next((t for t in turns if t.get("role") == "assistant"), None)
    if not user or not str(user.get("content") or "").strip():
        raise RowSkipped("no user turn with text")
    if not reply:
        raise RowSkipped("no assistant reply to compare with")
    if user.get("toxic"):
        raise RowSkipped("opening turn flagged toxic")
    ident = row.get("conversation_hash") or row.get("conversation_id") or f"{index + 1:07d}"
    return {"id": f"wildchat-{ident}", "prompt": user["content"], "answer": reply.get("content") or "",
            "domain": "wildchat", "split": "chat", "scorer": "judge", "difficulty": user.get("language")}


def _gsm8k(row: dict[str, Any], index: int) -> dict[str, Any]:
    # GSM8K: question, answer (worked solution ending "#### N")
    solution = str(row["answer"])
    if "####" not in solution:
        raise RowSkipped("the solution has no '#### N' final answer")
    final = solution.rsplit("####", 1)[-1].strip().replace(",", "")
    return {"id": f"gsm8k-{index + 1:05d}", "prompt": f"{row['question'].strip()}\n{GSM8K_INSTRUCTION}",
            "answer": final, "domain": "math", "split": "reasoning", "scorer": "numeric"}


BUILTIN_MAPPINGS: dict[str, HubMapping] = {
    m.name: m for m in (
        HubMapping("mmlu-pro", "TIGER-Lab/MMLU-Pro", ("question_id", "question", "options", "answer_index", "category"),
                   _mmlu_pro, split="test", id_column="question_id", protocol="mmlu-pro"),
        HubMapping("supergpqa", "m-a-p/SuperGPQA", ("uuid", "question", "options", "answer_letter", "discipline"),
                   _supergpqa, split="train", id_column="uuid", protocol="supergpqa"),
        HubMapping("gpqa", "Idavidrein/gpqa", ("Question", "Correct Answer", "Incorrect Answer 1",
                                               "Incorrect Answer 2", "Incorrect Answer 3"),
                   _gpqa, config="gpqa_diamond", split="train", id_column="Record ID", protocol="gpqa"),
        # free-form references compared by a judge: no published extraction protocol
        HubMapping("natural-reasoning", "facebook/natural_reasoning", ("question", "reference_answer"),
                   _natural_reasoning, split="train"),
        HubMapping("wildchat", "allenai/WildChat-1M", ("conversation",), _wildchat, split="train",
                   id_column="conversation_hash"),
        HubMapping("gsm8k", "openai/gsm8k", ("question", "answer"), _gsm8k, config="main", split="test",
                   protocol="gsm8k"),
    )
}


def builtin_for(ident: str) -> HubMapping | None:
    """The built-in mapping for a hub id or a local mirror directory, by its last path component."""
    key = re.sub(r"[^a-z0-9]+", "", ident.rstrip("/").rsplit("/", 1)[-1].lower())
    for mapping in BUILTIN_MAPPINGS.values():
        names = {re.sub(r"[^a-z0-9]+", "", mapping.name), re.sub(r"[^a-z0-9]+", "", mapping.repo.split("/")[-1].lower())}
        if key in names or (mapping.name == "wildchat" and key.startswith("wildchat")):
            return mapping
    return None


# --------------------------------------------------------------------------------------------------
# user column mappings (--ipw-columns)
# --------------------------------------------------------------------------------------------------


def parse_columns(text: str | None) -> dict[str, str]:
    """``prompt=question,answer=label`` to ``{"prompt": "question", "answer": "label"}``."""
    if not text:
        return {}
    mapping: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, column = part.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or not name or not column:
            raise IPWUsageError(f"--ipw-columns: {part.strip()!r} is not FIELD=COLUMN; e.g. "
                                "--ipw-columns=prompt=question,answer=label,choices=options,domain=subject")
        if name not in MAPPABLE:
            raise IPWUsageError(f"--ipw-columns: unknown field {name!r}; fields: {', '.join(MAPPABLE)}")
        mapping[name] = column
    return mapping


def _check_columns(mapping: dict[str, str], columns: Iterable[str], where: str) -> dict[str, str]:
    """The mapping completed with same-named columns; a mapped column the data lacks is an error."""
    available = list(columns)
    literal_ok = {"scorer", "split"}  # these may name a value instead of a column: scorer=judge
    for name, column in mapping.items():
        if column not in available and not (name in literal_ok and _literal(name, column)):
            raise IPWUsageError(f"--ipw-columns: column {column!r} (for {name}) is not in {where}; its columns are: "
                                f"{', '.join(available)}")
    full = {name: name for name in MAPPABLE if name in available}
    full.update(mapping)
    for required in ("prompt", "answer"):
        if required not in full:
            raise IPWUsageError(f"{where} has no {required!r} column; map one with --ipw-columns={required}=COLUMN "
                                f"(its columns are: {', '.join(available)})")
    return full


def _literal(name: str, value: str) -> bool:
    from pytest_ipw.queries.schema import SCORERS, SPLITS

    return value in (SCORERS if name == "scorer" else SPLITS)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return [str(v) for v in json.loads(text)]
            except json.JSONDecodeError:
                pass
        return [v for v in text.split("|")] if text else []
    return [str(v) for v in value]


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def map_row(row: dict[str, Any], mapping: dict[str, str], index: int, source: str) -> dict[str, Any]:
    """One row of a user's file to README's schema, through a completed column mapping."""
    def get(name: str) -> Any:
        column = mapping.get(name)
        if column is None:
            return None
        return row[column] if column in row else column  # a literal (scorer=judge) where no column has that name

    answer = get("answer")
    choices = _as_list(get("choices")) if "choices" in mapping else []
    prompt = str(get("prompt") or "")
    if choices:
        letters = LETTERS_FOR_CHOICES[: len(choices)]
        text = str(answer).strip()
        if isinstance(answer, int) or (text.isdigit() and text.upper() not in letters):
            answer = letters[int(text)] if 0 <= int(text) < len(letters) else text  # a 0-based index
        elif text.upper() in letters and len(text) == 1:
            answer = text.upper()
        elif text in choices:
            answer = letters[choices.index(text)]
        if not re.search(r"(?m)^\s*\(?A[).:]", prompt):
            prompt = _lettered(prompt, choices)  # the model must see the options
    answer = "" if answer is None else (answer if isinstance(answer, str) else json.dumps(answer) if isinstance(answer, (list, dict)) else str(answer))
    scorer = get("scorer") or ("choice" if choices else "numeric" if _is_number(answer) else "exact")
    raw_id = get("id")
    return {
        # a mapped id is the user's own: used as given (a mix prefixes every id with its data set's name)
        "id": str(raw_id).strip() if raw_id is not None else f"{source}-{index + 1:05d}",
        "prompt": prompt,
        "answer": answer,
        "choices": choices,
        "domain": get("domain") or source,
        "split": get("split") or ("reasoning" if scorer in ("choice", "numeric") else "chat"),
        "scorer": scorer,
        "tolerance": get("tolerance"),
        "difficulty": get("difficulty"),
        "aliases": get("aliases"),
        "source": source,
    }


# --------------------------------------------------------------------------------------------------
# spec parsing and loading
# --------------------------------------------------------------------------------------------------


def _source_name(text: str) -> str:
    base = text.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    base = Path(base).stem if "." in base else base
    return re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-") or "data"


def load_query_set(spec: str | None, columns: str | None = None, skip_invalid: bool = False) -> QuerySet:
    """Load what ``--ipw-dataset`` names (default: the shipped set). Every problem is one IPWUsageError.

    Rows of a hub data set that its built-in mapping cannot use are always left out, counted and named in
    ``sources[].skipped``; a user's own file (or a user's ``--ipw-columns`` mapping) fails on its first bad
    row unless ``skip_invalid`` (``--ipw-skip-invalid``) applies the same rule to it.
    """
    mapping = parse_columns(columns)
    if spec is None:
        if mapping:
            raise IPWUsageError("--ipw-columns maps the columns of a file given with --ipw-dataset; name that file")
        return QuerySet(load_queries(DEFAULT_QUERY_SET), str(DEFAULT_QUERY_SET),
                        sources=[{"kind": "file", "spec": str(DEFAULT_QUERY_SET)}])
    text = spec.strip()
    if text.startswith("mix:"):
        return _load_mix(text[4:], mapping, skip_invalid)
    name, queries, info = _load_single(text, mapping, skip_invalid)
    return QuerySet(queries, text, sources=[info])


def _load_mix(body: str, mapping: dict[str, str], skip_invalid: bool) -> QuerySet:
    parts = [p.strip() for p in body.split(",") if p.strip()]
    if len(parts) < 2:
        raise IPWUsageError(f"--ipw-dataset=mix:{body}: a mix names at least two data sets, comma-separated, "
                            "e.g. mix:hf:TIGER-Lab/MMLU-Pro*2,hf:openai/gsm8k")
    weights: dict[str, float] = {}
    queries: list[Query] = []
    infos: list[dict[str, Any]] = []
    for part in parts:
        source_spec, weight = part, 1.0
        match = re.fullmatch(r"(.+)\*([0-9]*\.?[0-9]+)", part)
        if match:
            source_spec, weight = match.group(1), float(match.group(2))
        if weight <= 0:
            raise IPWUsageError(f"--ipw-dataset mix: weight of {source_spec} must be positive, got {weight:g}")
        name, loaded, info = _load_single(source_spec, mapping, skip_invalid)
        if name in weights:
            raise IPWUsageError(f"--ipw-dataset mix names the data set {name!r} twice; give each once (weight with *W)")
        weights[name] = weight
        info["weight"] = weight
        infos.append(info)
        # Ids must be unique across the mix and say where they came from.
        queries.extend(_tagged(q, name) for q in loaded)
    seen: set[str] = set()
    for query in queries:
        if query.id in seen:
            raise IPWUsageError(f"--ipw-dataset mix: two data sets give the query id {query.id!r}; rename one")
        seen.add(query.id)
    return QuerySet(queries, "mix:" + body, weights=weights, sources=infos)


def _tagged(query: Query, name: str) -> Query:
    from dataclasses import replace

    ident = query.id if query.id.startswith(name + "-") else f"{name}-{query.id}"
    return replace(query, id=ident, source=name)


def _load_single(text: str, mapping: dict[str, str], skip_invalid: bool) -> tuple[str, list[Query], dict[str, Any]]:
    skipped = SkippedRows() if skip_invalid else None  # a user's own rows: strict unless --ipw-skip-invalid
    if text.startswith("hf:"):
        return _load_hub(text[3:], mapping, skipped)
    path = Path(text).expanduser()
    name = _source_name(text)
    if not mapping:
        # rows without a source of their own take the file's name as they are made (not copied after)
        queries = load_queries(path, skipped, source=name)
        info = {"kind": "file", "spec": text, "loaded": len(queries), "skipped": _skipped_info(skipped)}
        return name, queries, info
    rows = _read_rows(path)
    queries = _queries_from_rows(rows, mapping, str(path), name, skipped)
    return name, queries, {"kind": "file", "spec": text, "columns": mapping, "rows": len(rows), "loaded": len(queries),
                           "skipped": _skipped_info(skipped)}


def _skipped_info(skipped: SkippedRows | None) -> dict[str, Any] | None:
    return skipped.to_dict() if skipped is not None else None


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """All rows of a local JSONL/CSV/Parquet file, with its own column names (any schema)."""
    builder = query_file_kind(path)
    if builder == "json":
        from pytest_ipw.queries.schema import _read_jsonl

        rows, _ = _read_jsonl(path)
        return rows
    if builder == "csv":
        from pytest_ipw.queries.schema import read_csv_rows

        return read_csv_rows(path)[0]  # text stays text in CSV: an id "007" must not become 7
    from pytest_ipw.queries.schema import read_parquet_rows

    return read_parquet_rows(path)


def _queries_from_rows(rows: list[dict[str, Any]], mapping: dict[str, str], where: str, name: str,
                       skipped: SkippedRows | None = None) -> list[Query]:
    if not rows:
        raise IPWUsageError(f"query set {where} has no rows")
    full = _check_columns(mapping, rows[0].keys(), where)
    queries: list[Query] = []
    seen: set[str] = set()
    for index, row in enumerate(rows):
        try:
            query = query_from_row(map_row(row, full, index, name))
        except (ValueError, KeyError) as exc:
            if skipped is not None:
                skipped.add(f"row {index + 1}", f"{exc} (after --ipw-columns)")
                continue
            raise IPWUsageError(f"query set {where}, row {index + 1}: {exc} (after --ipw-columns). Fix that row "
                                "or the mapping, or pass --ipw-skip-invalid to leave invalid rows out (they are "
                                "counted and named in the report).") from None
        if query.id in seen:
            if skipped is not None:
                skipped.add(row_label(query.id, f"row {index + 1}"), "duplicate id (the first is kept)")
                continue
            raise IPWUsageError(f"query set {where}, row {index + 1}: duplicate id {query.id!r}; map a unique "
                                "column with --ipw-columns=id=COLUMN, or leave id unmapped (row numbers are used)")
        seen.add(query.id)
        queries.append(query)
    if not queries:
        raise IPWUsageError(f"query set {where} has no valid rows ({skipped_summary(skipped)}); fix the mapping")
    return queries


def _datasets() -> Any:
    from pytest_ipw.core.extras import require

    datasets = require("datasets", "a Hugging Face hub data set (--ipw-dataset=hf:...)")
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def parse_hub_spec(body: str) -> tuple[str, dict[str, str]]:
    """``TIGER-Lab/MMLU-Pro?split=test`` to the id and its options (config, split, revision, mapping)."""
    ident, _, query = body.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - {"config", "split", "revision", "mapping"})
    if unknown or not ident.strip():
        raise IPWUsageError(f"--ipw-dataset=hf:{body}: expected hf:OWNER/NAME[?config=C&split=S&revision=R&mapping=M]"
                            + (f"; unknown option(s) {', '.join(unknown)}" if unknown else ""))
    return ident.strip(), options


def _load_hub(body: str, mapping: dict[str, str], skipped: SkippedRows | None) -> tuple[str, list[Query], dict[str, Any]]:
    ident, options = parse_hub_spec(body)
    builtin: HubMapping | None = None
    if options.get("mapping"):
        builtin = BUILTIN_MAPPINGS.get(options["mapping"])
        if builtin is None:
            raise IPWUsageError(f"--ipw-dataset=hf:{body}: unknown mapping {options['mapping']!r}; built-in: "
                                f"{', '.join(BUILTIN_MAPPINGS)}")
    elif not mapping:
        builtin = builtin_for(ident)
        if builtin is None:
            raise IPWUsageError(
                f"--ipw-dataset=hf:{ident}: no built-in column mapping for this data set (built-in: "
                f"{', '.join(m.repo for m in BUILTIN_MAPPINGS.values())}); map its columns with "
                "--ipw-columns=prompt=COLUMN,answer=COLUMN[,choices=...,domain=...]"
            )
    config = options.get("config") or (builtin.config if builtin else None)
    split = options.get("split") or (builtin.split if builtin else None)
    table, split = _hub_table(ident, config, split, options.get("revision"))
    name = builtin.name if builtin and not mapping else _source_name(ident)
    info = {"kind": "hub", "spec": f"hf:{body}", "id": ident, "config": config, "split": split,
            "revision": options.get("revision"), "rows": len(table),
            "fingerprint": getattr(table, "_fingerprint", None),
            "mapping": builtin.name if builtin and not mapping else {"columns": mapping}}
    if mapping:
        queries = _queries_from_rows(table.to_list(), mapping, f"hf:{ident}", name, skipped)
        info.update(loaded=len(queries), skipped=_skipped_info(skipped))
        return name, queries, info
    missing = [c for c in builtin.columns if c not in table.column_names]
    if missing:
        raise IPWUsageError(
            f"hf:{ident} has no column(s) {', '.join(missing)} that the built-in {builtin.name} mapping reads (its "
            f"columns are: {', '.join(table.column_names)}); map them with --ipw-columns=prompt=...,answer=..."
        )
    wanted = [c for c in table.column_names if c in _extra_columns(builtin)]
    queries, left_out = _builtin_queries(table.select_columns(wanted).to_list() if wanted else table.to_list(), builtin)
    info.update(loaded=len(queries), skipped=left_out.to_dict(), protocol=builtin.protocol)
    if not queries:
        raise IPWUsageError(f"hf:{ident} ({split}) has no usable rows ({skipped_summary(left_out)})")
    return name, queries, info


def _builtin_queries(rows: list[dict[str, Any]], builtin: HubMapping) -> tuple[list[Query], SkippedRows]:
    """Queries from a hub data set's rows through its built-in mapping. A row the mapping cannot turn into a
    valid query (real data has them: MMLU-Pro rows left with one option) is left out and recorded, never
    silently and never by stopping the run: the data set is the authors', not the user's to fix."""
    queries: list[Query] = []
    skipped = SkippedRows()
    seen: set[str] = set()
    for index, row in enumerate(rows):
        try:
            converted = builtin.convert(row, index)
            converted.update(source=builtin.name, protocol=builtin.protocol)
            query = query_from_row(converted)
        except (ValueError, KeyError, IndexError, TypeError) as exc:  # RowSkipped is a ValueError
            reason = str(exc) if isinstance(exc, ValueError) else f"{exc.__class__.__name__}: {exc}"
            skipped.add(_hub_row_label(builtin, row, index), reason)
            continue
        if query.id in seen:  # some copies repeat rows: keep the first
            skipped.add(_hub_row_label(builtin, row, index), "duplicate id (the first is kept)")
            continue
        seen.add(query.id)
        queries.append(query)
    return queries, skipped


def _hub_row_label(builtin: HubMapping, row: dict[str, Any], index: int) -> str:
    ident = row.get(builtin.id_column) if builtin.id_column else None
    return row_label(None if ident is None else f"{builtin.name}-{ident}", f"row {index + 1}")


def skipped_lines(sources: Iterable[dict[str, Any]]) -> list[str]:
    """Report lines for the rows each data set left out: how many, why, and which (``settings.dataset_sources``)."""
    lines = []
    for info in sources:
        skipped = info.get("skipped") or {}
        if not skipped.get("count"):
            continue
        total = info.get("rows") or (info.get("loaded", 0) + skipped["count"])
        lines.append(f"dataset {info.get('spec')}: {info.get('loaded')} of {total} rows loaded, {skipped['count']} "
                     "skipped (rows that cannot become a valid query):")
        for reason, count in skipped.get("by_reason", {}).items():
            named = [r["row"] for r in skipped.get("rows", []) if r["reason"] == reason]
            more = f" and {count - len(named)} more" if count > len(named) else ""
            lines.append(f"  {count} x {reason}: {', '.join(named)}{more}")
    return lines


def _extra_columns(mapping: HubMapping) -> set[str]:
    """Columns a mapping reads, so that only those are materialised (WildChat rows are large)."""
    optional = {"mmlu-pro": {"answer"}, "supergpqa": {"difficulty"}, "gpqa": {"High-level domain", "Record ID"},
                "wildchat": {"conversation_hash", "conversation_id"}}
    return set(mapping.columns) | optional.get(mapping.name, set())


def _hub_table(ident: str, config: str | None, split: str | None, revision: str | None) -> tuple[Any, str]:
    """One split of a hub data set (or a local directory laid out like one), with clear errors."""
    datasets = _datasets()
    from datasets.exceptions import DatasetNotFoundError

    where = f"hf:{ident}" + (f" (config {config})" if config else "")
    try:
        loaded = datasets.load_dataset(ident, config, split=split, revision=revision)
    except DatasetNotFoundError as exc:
        if _offline(datasets):
            raise IPWUsageError(_offline_message(ident)) from None
        raise IPWUsageError(
            f"data set {ident!r} was not found on the Hugging Face Hub ({_first_line(exc)}); check the id, or, "
            "for a gated data set (e.g. GPQA), accept its terms on huggingface.co and log in with `hf auth login`"
        ) from None
    except ConnectionError:
        raise IPWUsageError(_offline_message(ident)) from None
    except FileNotFoundError as exc:
        raise IPWUsageError(f"{where}: {_first_line(exc)}; check the id or local path") from None
    except ValueError as exc:
        message = _first_line(exc)
        hint = " name one with hf:ID?config=NAME" if "config" in message.lower() else \
            " name one with hf:ID?split=NAME" if "split" in message.lower() else ""
        raise IPWUsageError(f"{where} could not be loaded: {message};{hint or ' check the spec'}") from None
    except Exception as exc:  # network and format failures come in many types; one line each
        raise IPWUsageError(f"{where} could not be loaded: {exc.__class__.__name__}: {_first_line(exc)}") from None
    if isinstance(loaded, dict):  # no split named: prefer the evaluation split
        names = list(loaded)
        split = next((s for s in ("test", "validation", "train") if s in names), names[0])
        loaded = loaded[split]
    return loaded, split or "?"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else exc.__class__.__name__


def _offline(datasets: Any) -> bool:
    try:
        import huggingface_hub.constants as hub

        return bool(getattr(hub, "HF_HUB_OFFLINE", False) or getattr(datasets.config, "HF_DATASETS_OFFLINE", False))
    except ImportError:  # pragma: no cover
        return bool(os.environ.get("HF_DATASETS_OFFLINE"))


def _offline_message(ident: str) -> str:
    return (f"data set {ident!r} is not in the local Hugging Face cache and the Hub cannot be reached (offline: "
            "no network, or HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set); load it once with network access "
            f"(`hf download --repo-type dataset {ident}`), or pass a local directory or file")
