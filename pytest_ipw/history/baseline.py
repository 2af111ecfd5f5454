"""End-of-session history: compare with a saved baseline, apply the gates, then save this run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from pytest_ipw.history.compare import Change, Gate, GateFailure, compare_runs, failed_gates
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.history.git import commit_info
from pytest_ipw.history.storage import SavedRun, Storage, load_run, machine_id, machine_identity


class HistoryOptions(Protocol):
    """The run options history needs (``pytest_ipw.options.RunOptions`` has them; this layer sits below it)."""

    storage: str
    machine_id: str | None
    autosave: bool
    save_name: str | None
    compare: str | None
    compare_fail: Sequence[str]
    compare_alpha: float
    compare_across_machines: bool
    require_baseline: bool


@dataclass
class HistoryOutcome:
    machine: str
    baseline: SavedRun | None = None
    changes: list[Change] = field(default_factory=list)
    failures: list[GateFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # failures that are not gates (no baseline when required...)
    saved: SavedRun | None = None

    @property
    def failed(self) -> bool:
        return bool(self.failures or self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine_id": self.machine,
            "baseline": self.baseline.id if self.baseline else None,
            "changes": [c.to_dict() for c in self.changes],
            "gate_failures": [f.line() for f in self.failures],
            "notes": self.notes,
            "errors": self.errors,
            "saved_as": self.saved.id if self.saved else None,
        }


def process_history(options: HistoryOptions, document: dict[str, Any]) -> HistoryOutcome | None:
    """Compare and/or save as the options ask; None when they ask for neither."""
    wants_save = options.autosave or options.save_name is not None
    if options.compare is None and not wants_save:
        return None
    storage = Storage(options.storage)
    meters = document["settings"].get("meters", {})
    document["machine_identity"] = machine_identity(document["machine_info"], meters)
    machine = options.machine_id or machine_id(document["machine_info"], meters)
    info = commit_info()
    document["machine_id"] = machine
    document["commit_info"] = info
    outcome = HistoryOutcome(machine)
    # A damaged baseline must not cost this run its results: report the error, still save.
    if options.compare is not None:
        try:
            _compare(options, storage, document, outcome)
        except IPWUsageError as exc:
            outcome.errors.append(str(exc))
    if wants_save:
        try:
            outcome.saved = storage.save(document, machine=machine, commit=str(info.get("id") or "unversioned"),
                                         dirty=bool(info.get("dirty")), name=options.save_name)
        except IPWUsageError as exc:
            outcome.errors.append(str(exc))
    return outcome


def _compare(options: HistoryOptions, storage: Storage, document: dict[str, Any], outcome: HistoryOutcome) -> None:
    baseline_run = storage.resolve(options.compare, outcome.machine, options.compare_across_machines)
    if baseline_run is None:
        message = f"no saved run matches --ipw-compare={options.compare} for machine id {outcome.machine}"
        nearest = None if options.compare_across_machines else storage.nearest_machine(
            document["machine_identity"], outcome.machine)
        if nearest is not None:
            other, differences = nearest
            why = "; ".join(differences) if differences else (
                "the same hardware and meter, saved under another id (--ipw-machine-id)")
            message += (f"; the nearest saved machine id is {other}, which differs: {why}. If the figures are "
                        "comparable after all, pass --ipw-compare-across-machines, or pin one id with "
                        "--ipw-machine-id (ini: ipw_machine_id)")
        if options.require_baseline:
            outcome.errors.append(message + " (and --ipw-require-baseline is set)")
        else:
            outcome.notes.append(message + "; nothing to compare, the gate passes" +
                                 ("; this run is saved as the baseline" if options.autosave or options.save_name else ""))
        return
    baseline = load_run(baseline_run.path)
    baseline_machine = baseline.get("machine_id")
    if baseline_machine not in (None, outcome.machine) and not options.compare_across_machines:
        outcome.errors.append(
            f"baseline {baseline_run.path} was saved on machine id {baseline_machine}, this run is {outcome.machine}: "
            "hardware or meter differ, so the figures are not comparable. Pass --ipw-compare-across-machines to compare anyway"
        )
        return
    outcome.baseline = baseline_run
    if baseline_machine not in (None, outcome.machine):
        outcome.notes.append(f"comparing ACROSS MACHINES: baseline {baseline_machine}, now {outcome.machine}")
    provenances = {s.get("provenance") for s in baseline.get("summary", []) + document.get("summary", [])}
    if "estimated" in provenances or "mixed" in provenances:
        outcome.notes.append("energy figures in this comparison include ESTIMATES, not measurements")
    outcome.changes = compare_runs(baseline, document, alpha=options.compare_alpha)
    if not outcome.changes:
        outcome.notes.append(f"baseline {baseline_run.id} shares no model × accelerator and query with this run")
    gates = [Gate.parse(text) for text in options.compare_fail]
    outcome.failures = failed_gates(outcome.changes, gates)

