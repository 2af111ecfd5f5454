#!/usr/bin/env python3
"""Record real answers of the embedded models to the shipped query set, for the scoring corpus.

Runs each embedded model (smollm2-135m and its re-quantisations) through the project's own llama-cpp
backend, with the benchmark's default settings (temperature 0, seed 0, 64 tokens), on a domain-stratified
sample of the shipped queries (a different sample per model), and writes one JSON line per answer:
model, query (as in the query set) and response. The texts are data: each answer of the recorded file was
read and labelled by hand into ``scoring_corpus.jsonl`` (items real-001.. in file order, with the model in
``source``); the file itself is not kept, and tests never regenerate answers (another machine, another
llama.cpp build may write other words).

Usage: ``python tests/data/record_scoring_answers.py [--per-model 64] [--output PATH]`` (about 8 minutes on
two CPU cores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

from pytest_ipw.backends import GenerationSettings, load_backend
from pytest_ipw.backends.models import parse_model_spec
from pytest_ipw.queries.schema import load_queries, select_queries

MODELS = ("smollm2-135m", "smollm2-135m-q8_0", "smollm2-135m-q3_k_s")
DEFAULT_OUTPUT = Path("recorded_model_answers.jsonl")  # in the working directory: an input to labelling
CPU = SimpleNamespace(profile=SimpleNamespace(name="cpu", offload=False, vendor="cpu"), index=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-model", type=int, default=64, help="queries per model (stratified by domain)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    queries = load_queries()  # the shipped set
    settings = GenerationSettings()  # the benchmark's defaults
    rows = []
    for seed, name in enumerate(MODELS, start=1):
        backend = load_backend(parse_model_spec(name), settings, CPU)
        try:
            for query in select_queries(queries, limit=args.per_model, seed=seed):
                generation = backend.generate(query.prompt)
                rows.append({"model": name, "query": {k: v for k, v in query.to_dict().items() if k != "source"},
                             "response": generation.text, "finish_reason": generation.finish_reason})
        finally:
            backend.close()
        print(f"{name}: {args.per_model} answers")
    with args.output.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} answers to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
