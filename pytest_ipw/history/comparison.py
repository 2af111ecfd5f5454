"""Comparing two results documents with gates: the one definition behind ``--ipw-compare`` at the end of a run
and ``pytest-ipw compare A B`` offline.

It checks that the two runs come from one machine id, pairs their systems (model × accelerator) by name — an
alias (``--ipw-model=assistant=SPEC``) names the release that replaces a model like the model it replaces —
or by an explicit ``--pair NEW=OLD``, states how much of each run the pairs cover, computes the changes, and
judges the gates. A gate that finds no system present in both runs judged nothing: it is said loudly (an
:class:`~pytest_ipw.core.warnings.UnpairedGateWarning`, a failure under ``--ipw-require-baseline``), never
shown as "within noise". A partial baseline (an interrupted run) is said the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from pytest_ipw.backends.models import describe_source
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.core.systems import record_system
from pytest_ipw.core.warnings import PartialBaselineWarning, UnpairedGateWarning
from pytest_ipw.history.compare import (
    Change,
    Gate,
    GateFailure,
    compare_runs,
    error_change_line,
    error_changes,
    failed_gates,
    PairKeys,
)
from pytest_ipw.history.storage import partial_note
from pytest_ipw.analysis.metrics import system_codes
from pytest_ipw.analysis.study import model_of_systems
from pytest_ipw.analysis.table import as_table, group_positions, merge_equal_labels


@dataclass(frozen=True)
class Flags:
    """How the caller spells its options in messages: the plugin's ``--ipw-*`` or the command's."""

    across_machines: str
    gate: str
    require: str
    pair_hint: str  # how to pair two differently named systems from where the user stands


PLUGIN_FLAGS = Flags("--ipw-compare-across-machines", "--ipw-compare-fail", "--ipw-require-baseline",
                     "name both releases with one alias (--ipw-model=NAME=SPEC, ini key ipw_model), or compare the "
                     "saved runs offline: pytest-ipw compare BASELINE CURRENT --pair {pair}")
CLI_FLAGS = Flags("--across-machines", "--fail", "--require-baseline",
                  "pair them: --pair {pair} (or name both releases with one alias, --ipw-model=NAME=SPEC)")

#: how a system of this run found its counterpart in the baseline
SAME_NAME, ALIAS, EXPLICIT, UNPAIRED = "same name", "alias", "--pair", "unpaired"


@dataclass(frozen=True)
class SystemCoverage:
    """One system of either run: what it was paired with, and how many queries each side holds and share."""

    current: str | None  # the system as this run names it, model@accelerator (None: only in the baseline)
    baseline: str | None  # its counterpart as the baseline names it (None: only in this run)
    paired: int  # queries present in both runs
    in_baseline: int
    in_current: int
    how: str  # SAME_NAME, ALIAS, EXPLICIT or UNPAIRED
    current_source: str = ""  # what stands behind each side's name (spec, file hash, server model)
    baseline_source: str = ""
    current_model: str | None = None
    baseline_model: str | None = None

    @property
    def label(self) -> str:
        if self.current and self.baseline and self.current != self.baseline:
            return f"{self.current} vs {self.baseline}"
        return str(self.current or self.baseline)

    @property
    def whole(self) -> int:
        """The larger side: a gate on fewer pairs than this judged only part of a run."""
        return max(self.in_baseline, self.in_current)

    def to_dict(self) -> dict[str, Any]:
        return {"system": self.label, "current": self.current, "baseline": self.baseline, "paired": self.paired,
                "in_baseline": self.in_baseline, "in_current": self.in_current, "paired_by": self.how,
                "current_source": self.current_source, "baseline_source": self.baseline_source,
                "current_model": self.current_model, "baseline_model": self.baseline_model}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SystemCoverage:
        return cls(data.get("current"), data.get("baseline"), int(data["paired"]), int(data["in_baseline"]),
                   int(data["in_current"]), str(data.get("paired_by")), str(data.get("current_source") or ""),
                   str(data.get("baseline_source") or ""), data.get("current_model"), data.get("baseline_model"))


COVERAGE_HEADERS = ["system", "paired", "in baseline", "in this run", "paired by"]
SOURCE_HEADERS = ["this run's model", "baseline's model"]


def coverage_cells(systems: Sequence[SystemCoverage], with_sources: bool | None = None) -> tuple[list[str], list[list[Any]]]:
    """The coverage table's headers and rows; the sources are shown where names alone do not say which
    file or version stands behind each side (an alias, an explicit pair), or when ``with_sources``."""
    show = any(s.how in (ALIAS, EXPLICIT) for s in systems) if with_sources is None else with_sources
    headers = COVERAGE_HEADERS + (SOURCE_HEADERS if show else [])
    rows = []
    for s in systems:
        row: list[Any] = [s.label, s.paired, s.in_baseline, s.in_current, s.how]
        if show:
            row += [s.current_source or "-", s.baseline_source or "-"]
        rows.append(row)
    return headers, rows


@dataclass
class Comparison:
    """Everything one comparison found. ``warnings`` are the loud findings, (category, message) for pytest's
    warnings; ``errors`` repeat those that fail the run (under ``--ipw-require-baseline``)."""

    baseline_label: str
    current_label: str
    systems: list[SystemCoverage] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    failures: list[GateFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[tuple[type[Warning], str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: queries each run could not answer, per system and kind (history.compare.error_changes)
    query_errors: list[dict[str, Any]] = field(default_factory=list)

    def coverage_table(self, fmt: str = "simple") -> str:
        from tabulate import tabulate

        headers, rows = coverage_cells(self.systems)
        return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)

    def to_dict(self) -> dict[str, Any]:
        return {"coverage": [s.to_dict() for s in self.systems], "changes": [c.to_dict() for c in self.changes],
                "gate_failures": [f.line() for f in self.failures], "notes": self.notes,
                "warnings": [message for _, message in self.warnings], "errors": self.errors,
                "query_errors": self.query_errors}


@dataclass(frozen=True, eq=False)
class _System:
    model: str
    accelerator: str
    keys: Any  # the pairing keys of its queries: distinct integers, one numbering for both runs (sorted)

    def shared(self, other: "_System") -> int:
        """How many queries the two have in common."""
        import numpy as np

        return len(np.intersect1d(self.keys, other.keys, assume_unique=True))


def _systems_of_both(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[dict[str, _System], dict[str, _System]]:
    """Per run: system label (:func:`~pytest_ipw.core.systems.record_system`) -> its model, accelerator and
    queries (keyed as :func:`~pytest_ipw.history.compare.pair_key`, numbered alike in both runs)."""
    import numpy as np

    old_table, new_table = as_table(baseline.get("records") or []), as_table(current.get("records") or [])
    keys = PairKeys.of(old_table, new_table)
    found = []
    for table, numbered in ((old_table, keys.baseline), (new_table, keys.current)):
        systems_of: dict[str, _System] = {}
        if len(table):
            codes, systems = system_codes(table)
            model_codes, models = table.codes("model")
            accelerator_codes, accelerators = table.codes("accelerator")
            for label, rows in zip(systems, group_positions(codes, len(systems))):
                first = int(rows[0])
                systems_of[label] = _System(str(models[model_codes[first]]),
                                            str(accelerators[accelerator_codes[first]]), np.unique(numbered[rows]))
        found.append(systems_of)
    return found[0], found[1]


def _relabel(label: str, old_model: str, new_model: str) -> str:
    """A system label with another model: ``v1@cpu[test_vote]`` -> ``v2@cpu[test_vote]``."""
    return new_model + label[len(old_model):] if label.startswith(old_model + "@") else label


def _source(document: Mapping[str, Any], system: _System) -> tuple[str, bool]:
    """What stands behind a system's name in a document (from ``settings.models``), and whether it is an alias."""
    info = ((document.get("settings") or {}).get("models") or {}).get(f"{system.model}-{system.accelerator}")
    if not isinstance(info, Mapping):
        return describe_source(None), False
    source = info.get("source")
    if not isinstance(source, Mapping):  # saved before sources were recorded: the backend's own facts
        source = {"file": info.get("model_file") or info.get("answers_file"), "backend": info.get("backend"),
                  "server_model": info.get("served_model"), "model": info.get("model")}
    return describe_source(dict(source)), bool(source.get("alias"))


def _names(systems: Mapping[str, Any]) -> str:
    return ", ".join(sorted(systems)) or "no records"


def parse_pairs(texts: Sequence[str]) -> dict[str, str]:
    """``NEW=OLD`` pairs (this run's model name = the baseline's) to a mapping; a bad one is a usage error."""
    pairs: dict[str, str] = {}
    for text in texts:
        new, sep, old = text.partition("=")
        if not sep or not new.strip() or not old.strip():
            raise IPWUsageError(f"--pair {text!r} is not NEW=OLD (this run's model name = the baseline's), e.g. "
                                "--pair assistant-v2=assistant-v1")
        if new.strip() in pairs:
            raise IPWUsageError(f"--pair names {new.strip()} twice; pair each model of the current run once")
        pairs[new.strip()] = old.strip()
    return pairs


def compare_documents(baseline: Mapping[str, Any], current: Mapping[str, Any], *, baseline_label: str,
                      current_label: str = "this run", gates: Sequence[Gate] = (), alpha: float = 0.05,
                      pairs: Mapping[str, str] | None = None, across_machines: bool = False,
                      require_baseline: bool = False, flags: Flags = PLUGIN_FLAGS) -> Comparison:
    """Compare ``current`` with ``baseline`` (two results documents) and judge ``gates``.

    ``pairs`` maps a model of ``current`` to the model of ``baseline`` it replaces (``--pair NEW=OLD``); other
    systems pair by name. Runs of different machine ids are refused (IPWUsageError) unless ``across_machines``.
    """
    machines = (baseline.get("machine_id"), current.get("machine_id"))
    if None not in machines and machines[0] != machines[1] and not across_machines:
        raise IPWUsageError(
            f"{baseline_label} was saved on machine id {machines[0]}, {current_label} on {machines[1]}: hardware or "
            f"meter differ, so the figures are not comparable. Pass {flags.across_machines} to compare anyway")
    # each run's records as one table, shared by every step below (pairing, changes, errors, coverage)
    baseline, current = ({**document, "records": as_table(document.get("records") or []).view()}
                         for document in (baseline, current))
    result = Comparison(baseline_label, current_label)
    if None not in machines and machines[0] != machines[1]:
        result.notes.append(f"comparing ACROSS MACHINES: baseline {machines[0]}, now {machines[1]}")
    _partial_runs(baseline, current, result, flags)
    before, after = _systems_of_both(baseline, current)
    pairs = dict(pairs or {})
    _check_pairs(pairs, before, after, baseline_label, current_label)
    result.systems = _pair_systems(baseline, current, before, after, pairs)
    judged = [s for s in result.systems if s.paired > 0]
    provenances = {s.get("provenance") for s in list(baseline.get("summary") or []) + list(current.get("summary") or [])}
    if judged and provenances & {"estimated", "mixed"}:
        result.notes.append("energy figures in this comparison include ESTIMATES, not measurements")
    if judged:
        result.changes = compare_runs(_renamed(baseline, pairs), current, alpha=alpha)
        result.failures = failed_gates(result.changes, gates)
    _query_errors(_renamed(baseline, pairs), current, result)
    _say_coverage(result, judged, gates, baseline, current, flags, require_baseline, before, after)
    return result


def _on_error(document: Mapping[str, Any]) -> str:
    """A run's ``--ipw-on-error``; runs saved before the option existed stopped at such a query, so kept none."""
    recorded = ((document.get("settings") or {}).get("options") or {}).get("ipw_on_error")  # keyed by ini key
    return recorded.get("value", "record") if isinstance(recorded, Mapping) else "record"


def _query_errors(baseline: Mapping[str, Any], current: Mapping[str, Any], result: Comparison) -> None:
    """Say how many queries each side could not answer, and when the two runs treat them differently."""
    before, now = _on_error(baseline), _on_error(current)
    if before != now:
        result.notes.append(f"the baseline ran with --ipw-on-error={before}, {result.current_label} with {now}: "
                            "queries that could not be answered are counted wrong on one side and left out on the "
                            "other; the paired figures cover the queries both runs kept")
    result.query_errors = error_changes(baseline, current)
    result.notes.extend(error_change_line(row) for row in result.query_errors)


def _partial_runs(baseline: Mapping[str, Any], current: Mapping[str, Any], result: Comparison, flags: Flags) -> None:
    if baseline.get("partial"):
        message = (f"baseline {result.baseline_label} is a PARTIAL run ({partial_note(baseline)} finished): it was "
                   "named explicitly, so it is compared, but it covers only part of the queries; 'latest', a branch "
                   "or a commit pass over partial runs")
        result.warnings.append((PartialBaselineWarning, message))
    if current.get("partial"):
        result.notes.append(f"{result.current_label} is a PARTIAL run ({partial_note(current)} finished)")


def _check_pairs(pairs: Mapping[str, str], before: Mapping[str, _System], after: Mapping[str, _System],
                 baseline_label: str, current_label: str) -> None:
    old_models, new_models = {s.model for s in before.values()}, {s.model for s in after.values()}
    for new, old in pairs.items():
        if new not in new_models:
            raise IPWUsageError(f"--pair {new}={old}: {current_label} has no model {new!r} (it has "
                                f"{', '.join(sorted(new_models)) or 'none'}); write --pair NEW=OLD, this run's name first")
        if old not in old_models:
            raise IPWUsageError(f"--pair {new}={old}: {baseline_label} has no model {old!r} (it has "
                                f"{', '.join(sorted(old_models)) or 'none'})")


def _pair_systems(baseline: Mapping[str, Any], current: Mapping[str, Any], before: Mapping[str, _System],
                  after: Mapping[str, _System], pairs: Mapping[str, str]) -> list[SystemCoverage]:
    systems, used = [], set()
    for label, system in sorted(after.items()):
        counterpart = _relabel(label, system.model, pairs[system.model]) if system.model in pairs else label
        source, aliased = _source(current, system)
        old = before.get(counterpart)
        if old is not None:
            used.add(counterpart)
            how = EXPLICIT if system.model in pairs else ALIAS if aliased else SAME_NAME
            systems.append(SystemCoverage(label, counterpart, system.shared(old), len(old.keys),
                                          len(system.keys), how, source, _source(baseline, old)[0], system.model,
                                          old.model))
        else:
            systems.append(SystemCoverage(label, None, 0, 0, len(system.keys), UNPAIRED, source, "", system.model))
    for label, old in sorted(before.items()):
        if label not in used:
            systems.append(SystemCoverage(None, label, 0, len(old.keys), 0, UNPAIRED, "", _source(baseline, old)[0],
                                          None, old.model))
    return systems


def _renamed(baseline: Mapping[str, Any], pairs: Mapping[str, str]) -> Mapping[str, Any]:
    """The baseline with each paired model's records under the current run's name (model and system label), so
    the changes pair them."""
    if not pairs:
        return baseline
    new_of = {old: new for new, old in pairs.items()}
    if len(new_of) == len(pairs):  # each old model renamed once: the same records under new labels
        table = as_table(baseline.get("records") or [])
        codes, systems = system_codes(table)
        model_of = model_of_systems(table)
        labels = [_relabel(s, model_of[s], new_of[model_of[s]]) if model_of[s] in new_of else s for s in systems]
        renamed = table.with_labels({"model": lambda m: new_of.get(m, m)},
                                    derived={"system": merge_equal_labels(codes, labels)})
        return {**baseline, "records": renamed.records}
    records = [r for r in baseline.get("records") or [] if r["model"] not in pairs]
    for new, old in pairs.items():
        records += [{**r, "model": new, "system": _relabel(record_system(r), old, new)}
                    for r in baseline.get("records") or [] if r["model"] == old]
    return {**baseline, "records": records}


def _say_coverage(result: Comparison, judged: Sequence[SystemCoverage], gates: Sequence[Gate],
                  baseline: Mapping[str, Any], current: Mapping[str, Any], flags: Flags, require_baseline: bool,
                  before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    """The notes, warnings and errors that say what the comparison covers and what the gates judged."""
    names = f"{result.baseline_label} has {_names(before)}; {result.current_label} has {_names(after)}"
    if not judged:
        only_new = [s for s in result.systems if s.current and not s.paired]
        only_old = [s for s in result.systems if s.baseline and not s.current]
        example = (f"{only_new[0].current_model}={only_old[0].baseline_model}"
                   if len(only_new) == 1 and len(only_old) == 1 else "NEW=OLD")
        hint = flags.pair_hint.format(pair=example)
        if gates:
            listed = ", ".join(f"{flags.gate}={g.text}" for g in gates)
            message = (f"{listed} judged nothing: no model × accelerator has queries in both runs ({names}); "
                       f"{hint}")
            result.warnings.append((UnpairedGateWarning, message))
            if require_baseline:
                result.errors.append(f"{message} (and {flags.require} is set)")
        else:
            result.notes.append(f"nothing to compare: no model × accelerator has queries in both runs ({names}); {hint}")
        return
    for system in result.systems:
        if system.paired == 0:
            side = result.current_label if system.current else result.baseline_label
            result.notes.append(f"{system.label} is only in {side}: {'no gate judged it' if gates else 'not compared'}")
    for gate in gates:
        if gate.metric == "coverage":  # a run-level figure: the queries of all systems
            paired, whole = _run_coverage(baseline, current)
            if paired < whole:
                result.notes.append(f"{flags.gate}={gate.text}: gate judged on {paired} paired queries of {whole} "
                                    "(coverage over the queries in both runs)")
            continue
        for system in judged:
            if system.paired < system.whole:
                result.notes.append(
                    f"{flags.gate}={gate.text} on {system.label}: gate judged on {system.paired} paired queries of "
                    f"{system.whole} ({system.in_baseline} in the baseline, {system.in_current} in {result.current_label})")


def _run_coverage(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[int, int]:
    import numpy as np

    keys = PairKeys.of(as_table(baseline.get("records") or []), as_table(current.get("records") or []))
    before, after = np.unique(keys.baseline), np.unique(keys.current)
    return len(np.intersect1d(before, after, assume_unique=True)), max(len(before), len(after))
