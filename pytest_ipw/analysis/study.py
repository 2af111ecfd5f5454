"""The study's analyses as pure functions over per-query records (README "Analyses").

- :func:`coverage_analysis`: share of queries that at least one member of a set of models (or model ×
  accelerator systems) answers correctly, overall, per domain and per split, with each member's marginal
  contribution and a cumulative curve;
- :func:`local_vs_reference`: local models against a reference (frontier) model, per query;
- :func:`routing_analysis`: an oracle router and routers of a given accuracy against always using the
  largest model: energy, latency, accuracy;
- :func:`release_trends` and :func:`coverage_by_release`: IPW and coverage by model release date;
- :func:`pareto_frontier`: accuracy against joules per query across model × accelerator.

Nothing here reads files, draws or prints; every function takes records (the dicts of ``--ipw-json``) and
returns frozen dataclasses. A *system* is ``model@accelerator``. Energy figures keep their provenance
(``measured``, ``estimated`` or ``mixed``) so that a report can never show an estimate as a measurement.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Literal, Mapping, Sequence

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.analysis.metrics import Summary, combine_provenance, safe_ratio, summarize_systems, system_codes
from pytest_ipw.analysis.table import RecordTable, as_table
from pytest_ipw.core.systems import record_system
from pytest_ipw.analysis.model_info import REFERENCE, ModelInfo

Record = Mapping[str, Any]
Unit = Literal["system", "model"]
DEFAULT_ROUTER_ACCURACIES = (0.9, 0.8, 0.7)


#: fields the analyses read from every record (README "Results file")
ANALYSIS_FIELDS = ("query_id", "domain", "model", "accelerator", "correct", "unscorable", "joules", "watts",
                   "latency_s", "tokens_out", "provenance", "meter")


def check_records(records: Sequence[Any], source: str) -> None:
    """One clear error for records the analyses cannot read (a foreign or damaged file)."""
    required = frozenset(ANALYSIS_FIELDS)
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise IPWUsageError(f"{source}: record {index} is not an object; the file is not pytest-ipw results")
        if required <= record.keys():  # the common case, one set comparison
            continue
        missing = [key for key in ANALYSIS_FIELDS if key not in record]
        if missing:
            raise IPWUsageError(f"{source}: record {index} lacks {', '.join(missing)}; "
                                "it was not written by pytest-ipw's --ipw-json, or is damaged")


def system_of(record: Record) -> str:
    """The system of a record: ``model@accelerator``, with ``[benchmark]`` where several benchmarks ran."""
    return record_system(record)


# -- coverage --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """``covered`` of ``queries`` queries."""

    covered: int
    queries: int

    @property
    def share(self) -> float:
        return self.covered / self.queries if self.queries else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"covered": self.covered, "queries": self.queries, "coverage": self.share}


@dataclass(frozen=True)
class Outcomes:
    """Who answered which query correctly: the table every coverage figure is computed from."""

    queries: dict[str, tuple[str, str]]  # query id -> (domain, split), first-seen order
    solved: dict[str, frozenset[str]]  # member -> query ids it answered correctly
    attempted: dict[str, frozenset[str]]  # member -> query ids it has a record for


@dataclass(frozen=True)
class _OutcomeArrays:
    """Who answered which query correctly, as arrays: queries numbered in first-seen order."""

    query_ids: list[str]
    domains: list[str]  # labels of ``domain_of``
    domain_of: Any  # per query, its domain's number (of its first record)
    splits: list[str]
    split_of: Any
    members: list[str]
    solved: Any  # members × queries, bool
    attempted: Any  # members × queries, bool


def _outcome_arrays(table: "RecordTable", unit: Unit) -> _OutcomeArrays:
    import numpy as np

    member_codes, members = _member_codes(table, unit)
    query_codes, query_labels = table.codes("query_id")
    first = np.full(len(query_labels), len(table), dtype=np.int64)
    np.minimum.at(first, query_codes, np.arange(len(table)))  # each query's first record
    domain_codes, domains = table.codes("domain", "?")
    split_codes, splits = table.codes("split")
    correct = table.flags("correct")
    solved = np.zeros((len(members), len(query_labels)), dtype=np.bool_)
    attempted = np.zeros_like(solved)
    attempted[member_codes, query_codes] = True
    solved[member_codes[correct], query_codes[correct]] = True
    return _OutcomeArrays([str(q) for q in query_labels], [str(d) for d in domains], domain_codes[first],
                          [str(s or "?") for s in splits], split_codes[first], members, solved, attempted)


def outcomes(records: "Iterable[Record] | RecordTable", unit: Unit = "system") -> Outcomes:
    """Per member, the queries it attempted and answered correctly (a model counts on any accelerator)."""
    import numpy as np

    arrays = _outcome_arrays(as_table(records), unit)
    ids = np.array(arrays.query_ids, dtype=object)
    queries = {q: (arrays.domains[d], arrays.splits[s])
               for q, d, s in zip(arrays.query_ids, arrays.domain_of.tolist(), arrays.split_of.tolist())}
    solved = {m: frozenset(ids[arrays.solved[i]].tolist()) for i, m in enumerate(arrays.members)}
    attempted = {m: frozenset(ids[arrays.attempted[i]].tolist()) for i, m in enumerate(arrays.members)}
    return Outcomes(queries, solved, attempted)


def _member_codes(table: "RecordTable", unit: Unit) -> tuple[Any, list[str]]:
    if unit == "system":
        return system_codes(table)
    if unit == "model":
        codes, labels = table.codes("model")
        return codes, [str(label) for label in labels]
    raise ValueError(f"unit must be 'system' or 'model', got {unit!r}")


@dataclass(frozen=True)
class CoverageAnalysis:
    """Coverage of ``members`` over every query in the records (the same denominator for any subset)."""

    unit: str
    members: tuple[str, ...]
    overall: Cell
    by_domain: dict[str, Cell]
    by_split: dict[str, Cell]
    accuracy: dict[str, Cell]  # member -> its own correct answers of the queries it attempted
    accuracy_by_domain: dict[tuple[str, str], Cell]  # (member, domain) -> correct of attempted in that domain
    marginal: dict[str, int]  # member -> queries that only it answers (what the set loses without it)
    cumulative: tuple[tuple[str, Cell], ...]  # members added one by one (greedy, or a given order)

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "members": list(self.members),
            **self.overall.to_dict(),
            "by_domain": {d: c.to_dict() for d, c in sorted(self.by_domain.items())},
            "by_split": {s: c.to_dict() for s, c in sorted(self.by_split.items())},
            "accuracy": {m: c.to_dict() for m, c in self.accuracy.items()},
            "marginal": dict(self.marginal),
            "cumulative": [{"member": m, **c.to_dict()} for m, c in self.cumulative],
        }


def _check_members(requested: Iterable[str], known: Collection[str], what: str) -> list[str]:
    chosen = list(dict.fromkeys(requested))
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise IPWUsageError(f"{what} {', '.join(map(repr, unknown))} not in these records; "
                            f"they have: {', '.join(sorted(known)) or 'nothing'}")
    return chosen


def _cells(labels: Sequence[str], label_of: Any, covered: Any, among: Any = None) -> dict[str, Cell]:
    """Per label (of each query: ``labels[label_of[q]]``), how many queries are ``covered`` of those
    ``among`` (all queries by default); labels in first-seen order of their queries."""
    import numpy as np

    if among is not None:
        label_of, covered = label_of[among], covered[among]
    totals = np.bincount(label_of, minlength=len(labels))
    hits = np.bincount(label_of, weights=covered, minlength=len(labels))
    present, first = np.unique(label_of, return_index=True)
    return {labels[k]: Cell(int(hits[k]), int(totals[k])) for k in present[np.argsort(first, kind="stable")].tolist()}


def coverage_analysis(records: "Iterable[Record] | RecordTable", members: Iterable[str] | None = None,
                      unit: Unit = "system", order: Sequence[str] | None = None) -> CoverageAnalysis:
    """Coverage of a set of models (``unit="model"``) or model × accelerator systems (``"system"``).

    The denominator is every query present in ``records``, whichever members attempted it, so the
    coverage of a subset is directly comparable with (and never above) that of a superset. ``order``
    fixes the cumulative curve (e.g. by release date); otherwise each step adds the member that covers
    the most new queries (ties by name).
    """
    arrays = _outcome_arrays(as_table(records), unit)
    number = {m: i for i, m in enumerate(arrays.members)}
    chosen = _check_members(members, number, "member(s)") if members is not None else list(arrays.members)
    picked = arrays.solved[[number[m] for m in chosen]]
    covered = picked.any(axis=0)
    solvers = picked.sum(axis=0)
    accuracy_by_domain: dict[tuple[str, str], Cell] = {}
    for member in chosen:
        row = number[member]
        for domain, cell in _cells(arrays.domains, arrays.domain_of, arrays.solved[row],
                                   arrays.attempted[row]).items():
            accuracy_by_domain[(member, domain)] = cell
    return CoverageAnalysis(
        unit=unit,
        members=tuple(chosen),
        overall=Cell(int(covered.sum()), len(arrays.query_ids)),
        by_domain=_cells(arrays.domains, arrays.domain_of, covered),
        by_split=_cells(arrays.splits, arrays.split_of, covered),
        accuracy={m: Cell(int(arrays.solved[number[m]].sum()), int(arrays.attempted[number[m]].sum()))
                  for m in chosen},
        accuracy_by_domain=accuracy_by_domain,
        marginal={m: int((arrays.solved[number[m]] & (solvers == 1)).sum()) for m in chosen},
        cumulative=_cumulative(arrays, number, chosen, order),
    )


def _cumulative(arrays: _OutcomeArrays, number: Mapping[str, int], chosen: list[str],
                order: Sequence[str] | None) -> tuple[tuple[str, Cell], ...]:
    import numpy as np

    total = len(arrays.query_ids)
    if order is not None:
        sequence = [m for m in _check_members(order, number, "order member(s)") if m in chosen]
    else:
        sequence, left = [], set(chosen)
        covered = np.zeros(total, dtype=np.bool_)
        while left:
            best = min(left, key=lambda m: (-int((arrays.solved[number[m]] & ~covered).sum()), m))
            sequence.append(best)
            covered |= arrays.solved[number[best]]
            left.remove(best)
    steps: list[tuple[str, Cell]] = []
    covered = np.zeros(total, dtype=np.bool_)
    for member in sequence:
        covered |= arrays.solved[number[member]]
        steps.append((member, Cell(int(covered.sum()), total)))
    return tuple(steps)


@dataclass(frozen=True)
class Versus:
    """Per-query tally of a local set against a reference: both right, only one, neither."""

    queries: int
    both: int
    local_only: int
    reference_only: int
    neither: int

    @property
    def local_correct(self) -> int:
        return self.both + self.local_only

    @property
    def reference_correct(self) -> int:
        return self.both + self.reference_only

    @property
    def local_coverage(self) -> float:
        return self.local_correct / self.queries if self.queries else 0.0

    @property
    def reference_accuracy(self) -> float:
        return self.reference_correct / self.queries if self.queries else 0.0

    @property
    def win_or_tie_rate(self) -> float:
        """Share of queries where the local set does at least as well as the reference (it is right, or
        the reference is wrong too): the study's local-vs-frontier win rate with ties counted."""
        return (self.queries - self.reference_only) / self.queries if self.queries else 0.0

    @property
    def win_rate(self) -> float:
        """Share of queries the local set answers and the reference does not."""
        return self.local_only / self.queries if self.queries else 0.0

    @property
    def share_of_reference(self) -> float | None:
        """Of the queries the reference answers, the share the local set answers too."""
        return safe_ratio(self.both, self.reference_correct)

    def to_dict(self) -> dict[str, Any]:
        return {"queries": self.queries, "both": self.both, "local_only": self.local_only,
                "reference_only": self.reference_only, "neither": self.neither,
                "local_coverage": self.local_coverage, "reference_accuracy": self.reference_accuracy,
                "win_or_tie_rate": self.win_or_tie_rate, "win_rate": self.win_rate,
                "share_of_reference": self.share_of_reference}


@dataclass(frozen=True)
class LocalVsReference:
    local: tuple[str, ...]
    reference: tuple[str, ...]
    overall: Versus
    by_domain: dict[str, Versus]
    by_split: dict[str, Versus]

    def to_dict(self) -> dict[str, Any]:
        return {"local": list(self.local), "reference": list(self.reference), **self.overall.to_dict(),
                "by_domain": {d: v.to_dict() for d, v in sorted(self.by_domain.items())},
                "by_split": {s: v.to_dict() for s, v in sorted(self.by_split.items())}}


def local_vs_reference(records: Iterable[Record], reference: Collection[str],
                       local: Collection[str] | None = None) -> LocalVsReference:
    """Local models (any accelerator) against reference model(s), over the queries the reference attempted.

    ``local`` defaults to every model that is not a reference. A query counts for a side when any of its
    models answered it correctly.
    """
    table = outcomes(records, "model")
    references = _check_members(sorted(reference), table.solved, "reference model(s)")
    if not references:
        raise IPWUsageError("local vs reference needs at least one reference model")
    locals_ = (_check_members(sorted(local), table.solved, "local model(s)") if local is not None
               else sorted(m for m in table.solved if m not in references))
    if set(locals_) & set(references):
        raise IPWUsageError(f"model(s) {', '.join(sorted(set(locals_) & set(references)))} cannot be both local and reference")
    if not locals_:
        raise IPWUsageError("local vs reference needs at least one local model besides the reference")
    attempted = set().union(*(table.attempted[m] for m in references))
    local_right = set().union(*(table.solved[m] for m in locals_))
    reference_right = set().union(*(table.solved[m] for m in references))

    def tally(query_ids: Iterable[str]) -> Versus:
        counts = [0, 0, 0, 0]
        n = 0
        for q in query_ids:
            n += 1
            counts[(q not in local_right) * 2 + (q not in reference_right)] += 1
        return Versus(n, both=counts[0], local_only=counts[1], reference_only=counts[2], neither=counts[3])

    ordered = [q for q in table.queries if q in attempted]
    by_domain: dict[str, list[str]] = {}
    by_split: dict[str, list[str]] = {}
    for q in ordered:
        domain, split = table.queries[q]
        by_domain.setdefault(domain, []).append(q)
        by_split.setdefault(split, []).append(q)
    return LocalVsReference(tuple(locals_), tuple(references), tally(ordered),
                            {d: tally(qs) for d, qs in by_domain.items()}, {s: tally(qs) for s, qs in by_split.items()})


def reference_models(infos: Mapping[str, ModelInfo], records: Iterable[Record]) -> list[str]:
    """The models of ``records`` that the model info marks as ``reference``."""
    present = {str(model) for model in as_table(records).codes("model")[1]}
    return sorted(name for name, info in infos.items() if info.role == REFERENCE and name in present)


# -- routing ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoutingResult:
    """One routing strategy over the routable queries."""

    strategy: str
    queries: int
    correct: int
    joules: float
    latency_s: float
    assignments: dict[str, int]  # system -> queries sent there
    provenance: str  # of the energy figures it adds up
    #: (query ids, systems, each query's system number): made into ``choices`` only when asked for
    routes: tuple[Sequence[str], Sequence[str], Any] | None = field(default=None, repr=False, compare=False)

    @property
    def choices(self) -> tuple[tuple[str, str], ...]:
        """(query id, system) of every routed query."""
        if self.routes is None:
            return ()
        query_ids, systems, routes = self.routes
        return tuple(zip(query_ids, (systems[c] for c in routes.tolist())))

    @property
    def accuracy(self) -> float:
        return self.correct / self.queries if self.queries else 0.0

    @property
    def mean_joules(self) -> float:
        return self.joules / self.queries if self.queries else 0.0

    @property
    def mean_latency_s(self) -> float:
        return self.latency_s / self.queries if self.queries else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "queries": self.queries, "correct": self.correct,
                "accuracy": self.accuracy, "joules": self.joules, "mean_joules": self.mean_joules,
                "latency_s": self.latency_s, "mean_latency_s": self.mean_latency_s,
                "assignments": dict(self.assignments), "provenance": self.provenance}


@dataclass(frozen=True)
class RoutingAnalysis:
    baseline: str  # the system "always the largest model" sends everything to
    baseline_reason: str
    fallback: str  # where a query goes that no candidate answers correctly
    candidates: tuple[str, ...]
    energy_basis: str
    results: tuple[RoutingResult, ...]  # baseline first, then the oracle, then routers
    skipped_queries: int  # queries without a record of the baseline or the fallback

    @property
    def baseline_result(self) -> RoutingResult:
        return self.results[0]

    def energy_saving(self, result: RoutingResult) -> float | None:
        """Fraction of the baseline's energy saved (0.8 = 80% less)."""
        base = self.baseline_result.joules
        return None if base <= 0 else 1 - result.joules / base

    def latency_saving(self, result: RoutingResult) -> float | None:
        base = self.baseline_result.latency_s
        return None if base <= 0 else 1 - result.latency_s / base

    def accuracy_change(self, result: RoutingResult) -> float:
        return result.accuracy - self.baseline_result.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "baseline_reason": self.baseline_reason, "fallback": self.fallback,
                "candidates": list(self.candidates), "energy_basis": self.energy_basis,
                "skipped_queries": self.skipped_queries,
                "results": [{**r.to_dict(), "energy_saving": self.energy_saving(r),
                             "latency_saving": self.latency_saving(r), "accuracy_change": self.accuracy_change(r)}
                            for r in self.results]}


def choose_baseline(records: "Sequence[Record] | RecordTable", systems: Collection[str],
                    parameters: Mapping[str, float] | None = None, basis: str = "total") -> tuple[str, str]:
    """The "always the largest model" system, and why it was chosen.

    The model with the most parameters (from model info); on several accelerators, the one that spends
    the least energy per query (so savings are not inflated). Without parameter counts: the system that
    spends the most energy per query, as a stand-in for the largest model, and the reason says so.
    """
    if not systems:
        raise IPWUsageError("routing needs at least one model × accelerator")
    table = as_table(records)
    mean = {s: e for s, e in _mean_energies(table, basis).items() if s in systems}
    model_of = model_of_systems(table)
    sized = {s: parameters[model_of[s]] for s in mean if parameters and parameters.get(model_of[s])}
    if sized:
        largest = max(sized.values())
        pick = min((s for s, p in sized.items() if p == largest), key=lambda s: (mean[s], s))
        return pick, f"the largest model by parameter count ({largest / 1e9:.3g}B)"
    pick = max(mean, key=lambda s: (mean[s], s))
    return pick, "the most energy per query (no parameter counts given: pass model info to choose by size)"


def _energies(table: "RecordTable", basis: str) -> Any:
    """Joules of every record, as an array: ``total`` (the window's energy) or ``active`` (above the idle
    baseline, where known; total where not)."""
    import numpy as np

    joules = table.numbers("joules")
    if basis != "active":
        return joules
    active = table.numbers("joules_active")
    return np.where(np.isnan(active), joules, active)


def _mean_energies(table: "RecordTable", basis: str) -> dict[str, float]:
    """System -> mean joules per query on ``basis``."""
    from pytest_ipw.analysis.table import group_positions

    codes, systems = system_codes(table)
    energy = _energies(table, basis)
    return {system: math.fsum(energy[rows].tolist()) / len(rows)
            for system, rows in zip(systems, group_positions(codes, len(systems)))}


def model_of_systems(table: "RecordTable") -> dict[str, str]:
    """System -> its model, systems in first-seen order."""
    from pytest_ipw.analysis.table import last_positions

    codes, systems = system_codes(table)
    model_codes, models = table.codes("model")
    last = last_positions(codes, len(systems))
    return {system: str(models[model_codes[position]]) for system, position in zip(systems, last.tolist())}


def routing_analysis(records: Sequence[Record], *, baseline: str | None = None, fallback: str | None = None,
                     candidates: Collection[str] | None = None, parameters: Mapping[str, float] | None = None,
                     reference: Collection[str] = (), router_accuracies: Sequence[float] = DEFAULT_ROUTER_ACCURACIES,
                     seed: int = 0, on_mistake: Literal["random", "baseline"] = "random",
                     basis: str = "total") -> RoutingAnalysis:
    """Oracle routing and simulated routers against always using the largest model.

    - **oracle**: each query goes to the candidate system that answered it correctly with the least energy
      (ties: less latency, then name); a query no candidate answers goes to ``fallback``.
    - **router p** (``router_accuracies``): with probability p it decides like the oracle; otherwise it
      errs, sending the query to a random other candidate that has it (``on_mistake="random"``) or to the
      baseline (``"baseline"``). Seeded: the same seed gives the same routes.
    - **baseline**: every query to ``baseline`` (default :func:`choose_baseline`).

    ``candidates`` defaults to every system whose model is not in ``reference``; ``fallback`` to the
    reference system (the one with the least energy per query) when there is one, else the baseline.
    Only queries the baseline and the fallback both answered are routed; the rest are counted in
    ``skipped_queries``.
    """
    import numpy as np

    table = as_table(records)
    codes, system_names = system_codes(table)
    systems = set(system_names)
    model_of = model_of_systems(table)
    reference = set(reference)
    reference_systems = sorted(s for s in systems if model_of[s] in reference)
    if candidates is None:
        chosen = sorted(s for s in systems if model_of[s] not in reference)
    else:
        chosen = _check_members(candidates, systems, "routing candidate(s)")
    if not chosen:
        raise IPWUsageError("routing needs at least one local (non-reference) model × accelerator to route to")
    if baseline is None:
        baseline, reason = choose_baseline(table, chosen, parameters, basis)
    else:
        _check_members([baseline], systems, "baseline")
        reason = "chosen by the user"
    if fallback is None:
        if reference_systems:
            means = _mean_energies(table, basis)
            fallback = min(reference_systems, key=lambda s: (means[s], s))
        else:
            fallback = baseline
    else:
        _check_members([fallback], systems, "fallback")
    for p in router_accuracies:
        if not 0 <= p <= 1:
            raise IPWUsageError(f"router accuracy must lie in 0..1, got {p}")

    # queries × systems: the position of each query's (last) record on each system, -1 where it has none
    query_codes, query_labels = table.codes("query_id")
    query_ids = [str(q) for q in query_labels]
    record_at = np.full((len(query_ids), len(system_names)), -1, dtype=np.int64)
    np.maximum.at(record_at, (query_codes, codes), np.arange(len(table)))
    column = {s: i for i, s in enumerate(system_names)}
    present = record_at >= 0
    routable = np.flatnonzero(present[:, column[baseline]] & present[:, column[fallback]])  # type: ignore[index]
    routable = routable[np.argsort(np.array(query_ids, dtype=object)[routable], kind="stable")]  # by query id
    if not len(routable):
        raise IPWUsageError(f"no query has records of both the baseline {baseline} and the fallback {fallback}; "
                            "routing needs them on the same queries")
    at = record_at[routable]
    routed_ids = [query_ids[q] for q in routable.tolist()]
    energy, latency = _energies(table, basis), np.nan_to_num(table.numbers("latency_s"))
    correct = table.flags("correct")

    # the oracle: the candidate that answered correctly with the least energy (ties: latency, then name)
    by_name = sorted(chosen)
    candidate_at = at[:, [column[s] for s in by_name]]
    right = (candidate_at >= 0) & correct[candidate_at]
    least = np.where(right, energy[candidate_at], np.inf)
    right &= least == least.min(axis=1, keepdims=True)
    quickest = np.where(right, latency[candidate_at], np.inf)
    right &= quickest == quickest.min(axis=1, keepdims=True)
    fallback_code = len(system_names)  # a code past the systems: "send it to the fallback"
    oracle = np.where(right.any(axis=1), np.array([column[s] for s in by_name])[right.argmax(axis=1)], fallback_code)
    oracle = np.where(oracle == fallback_code, column[fallback], oracle)  # type: ignore[index]

    def tally(name: str, routes: Any) -> RoutingResult:
        used = at[np.arange(len(routable)), routes]
        sent = np.bincount(routes, minlength=len(system_names))
        provenance_codes, provenances = table.codes("provenance", "unknown")
        return RoutingResult(
            strategy=name,
            queries=len(used),
            correct=int(correct[used].sum()),
            joules=math.fsum(energy[used].tolist()),
            latency_s=math.fsum(latency[used].tolist()),
            assignments={system_names[c]: int(sent[c]) for c in sorted(np.flatnonzero(sent).tolist(),
                                                                        key=lambda c: system_names[c])},
            provenance=combine_provenance(str(provenances[c]) for c in np.unique(provenance_codes[used]).tolist()),
            routes=(routed_ids, system_names, routes),
        )

    results = [tally(f"always {baseline}", np.full(len(routable), column[baseline])),  # type: ignore[index]
               tally("oracle", oracle)]
    candidate_codes = np.array([column[s] for s in chosen])
    has = at[:, candidate_codes] >= 0  # the candidates that answered each query, in the order given
    for p in router_accuracies:
        # seeded per accuracy: the same seed and p give the same routes
        rng = np.random.default_rng([seed % 2**32, int(round(p * 1_000_000))])
        routes = oracle.copy()
        wrong = np.flatnonzero(rng.random(len(routable)) >= p)
        others = has[wrong] & (candidate_codes[None, :] != oracle[wrong, None])
        if on_mistake == "baseline":
            routes[wrong] = column[baseline]  # type: ignore[index]
        else:
            count = others.sum(axis=1)
            pick = (rng.random(len(wrong)) * np.maximum(count, 1)).astype(np.int64)  # uniform among the others
            nth = np.argmax(np.cumsum(others, axis=1) > pick[:, None], axis=1)
            routes[wrong] = np.where(count > 0, candidate_codes[nth], column[baseline])  # type: ignore[index]
        results.append(tally(f"router {p:.0%} accurate", routes))
    return RoutingAnalysis(baseline, reason, fallback, tuple(chosen), basis, tuple(results),  # type: ignore[arg-type]
                           skipped_queries=len(query_ids) - len(routable))


# -- trends and the Pareto frontier ----------------------------------------------------------------

def summaries_of(records: Iterable[Record]) -> list[Summary]:
    """One :class:`~pytest_ipw.analysis.metrics.Summary` per system, in first-seen order."""
    return summarize_systems(records)


@dataclass(frozen=True)
class TrendPoint:
    model: str
    accelerator: str
    release_date: dt.date
    parameters: float | None
    accuracy: float
    ipw: float | None
    ipj: float | None
    mean_joules: float
    provenance: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "release_date": self.release_date.isoformat()}


def release_trends(summaries: Iterable[Summary], infos: Mapping[str, ModelInfo]) -> tuple[list[TrendPoint], list[str]]:
    """IPW, IPJ and accuracy of each model × accelerator by its model's release date.

    Returns the points (oldest first) and the models left out for want of a release date.
    """
    points, undated = [], []
    for s in summaries:
        info = infos.get(s.model)
        if info is None or info.release_date is None:
            undated.append(s.model)
            continue
        points.append(TrendPoint(s.model, s.accelerator, info.release_date, info.parameters, s.accuracy, s.ipw,
                                 s.ipj, s.mean_joules, s.provenance))
    points.sort(key=lambda p: (p.release_date, p.model, p.accelerator))
    return points, sorted(set(undated))


def coverage_by_release(records: Iterable[Record], infos: Mapping[str, ModelInfo]) -> list[tuple[dt.date, str, Cell]]:
    """Coverage of all local models released up to each release date (reference models excluded):
    how much of the query set the best locally runnable models of the time could answer."""
    records = as_table(records)
    dated = sorted((info.release_date, name) for name, info in infos.items()
                   if info.release_date is not None and info.role != REFERENCE)
    present = {str(model) for model in records.codes("model")[1]}
    order = [name for _, name in dated if name in present]
    if not order:
        return []
    analysis = coverage_analysis(records, unit="model", members=order, order=order)
    date_of = {name: infos[name].release_date for name in order}
    return [(date_of[m], m, cell) for m, cell in analysis.cumulative]  # type: ignore[misc]


@dataclass(frozen=True)
class ParetoPoint:
    system: str
    accuracy: float
    mean_joules: float
    provenance: str
    on_frontier: bool


def pareto_frontier(summaries: Iterable[Summary]) -> list[ParetoPoint]:
    """Accuracy (higher is better) against mean joules per query (lower is better).

    A system is on the frontier when no other has at least its accuracy for at most its energy, and is
    strictly better in one. Points come back ordered by energy.
    """
    items = [(s.system, s.accuracy, s.mean_joules, s.provenance) for s in summaries
             if s.mean_joules is not None and math.isfinite(s.mean_joules)]
    points = []
    for name, acc, joules, provenance in items:
        dominated = any(a >= acc and j <= joules and (a > acc or j < joules) for _, a, j, _ in items)
        points.append(ParetoPoint(name, acc, joules, provenance, not dominated))
    return sorted(points, key=lambda p: (p.mean_joules, -p.accuracy, p.system))
