"""End-of-session history: compare with a saved baseline, apply the gates, then save this run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.history.git import commit_info
from pytest_ipw.history.compare import Change, Gate, GateFailure
from pytest_ipw.history.comparison import PLUGIN_FLAGS, Comparison, compare_documents
from pytest_ipw.history.storage import SavedRun, Storage, machine_id, machine_identity, partial_note


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
    save_partial: bool


@dataclass
class HistoryOutcome:
    machine: str
    baseline: SavedRun | None = None
    comparison: Comparison | None = None
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # failures that are not gates (no baseline when required...)
    warnings: list[tuple[type[Warning], str]] = field(default_factory=list)  # issued as pytest warnings
    saved: SavedRun | None = None

    @property
    def changes(self) -> list[Change]:
        return self.comparison.changes if self.comparison else []

    @property
    def failures(self) -> list[GateFailure]:
        return self.comparison.failures if self.comparison else []

    @property
    def failed(self) -> bool:
        return bool(self.failures or self.errors)

    def to_dict(self) -> dict[str, Any]:
        compared = self.comparison.to_dict() if self.comparison else {"coverage": [], "changes": [], "gate_failures": []}
        return {
            "machine_id": self.machine,
            "baseline": self.baseline.id if self.baseline else None,
            **compared,
            "notes": self.notes,
            "warnings": [message for _, message in self.warnings],
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
    if wants_save and document.get("partial") and not options.save_partial:
        outcome.notes.append(f"not saved: this run is PARTIAL ({partial_note(document)} finished) and "
                             "--ipw-save-partial=no")
    elif wants_save:
        try:
            outcome.saved = storage.save(document, machine=machine, commit=str(info.get("id") or "unversioned"),
                                         dirty=bool(info.get("dirty")), name=options.save_name)
        except IPWUsageError as exc:
            outcome.errors.append(str(exc))
        if outcome.saved is not None and document.get("partial"):
            outcome.notes.append(f"saved as a PARTIAL run ({partial_note(document)} finished): --ipw-compare=latest "
                                 "passes over it (--ipw-save-partial=no would not save it)")
    return outcome


def _compare(options: HistoryOptions, storage: Storage, document: dict[str, Any], outcome: HistoryOutcome) -> None:
    choice = storage.select_baseline(options.compare, outcome.machine, options.compare_across_machines)
    skipped = choice.skipped_line()
    if choice.run is None:
        message = f"no saved run matches --ipw-compare={options.compare} for machine id {outcome.machine}"
        if skipped:
            message += f" ({skipped}; name one by its number to compare with it anyway)"
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
    if skipped:
        outcome.notes.append(f"{skipped}; compared with the newest complete run, {choice.run.id}")
    assert choice.document is not None
    comparison = compare_documents(
        choice.document, document, baseline_label=choice.run.id, gates=[Gate.parse(t) for t in options.compare_fail],
        alpha=options.compare_alpha, across_machines=options.compare_across_machines,
        require_baseline=options.require_baseline, flags=PLUGIN_FLAGS)
    outcome.baseline = choice.run
    outcome.comparison = comparison
    outcome.notes += comparison.notes
    outcome.warnings += comparison.warnings
    outcome.errors += comparison.errors
