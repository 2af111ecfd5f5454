"""A progress line for long runs, written through pytest's own terminal reporter.

Counts come from the records as the run session receives them (in-process, from each query of a
``--ipw-granularity=domain|model`` item as it finishes, or on the xdist controller from the workers'
reports), so every mode is covered by one path. Records taken over from an interrupted run
(``--ipw-resume``) count as done but not towards the rate behind the ETA.

In a terminal the line appears with the first answer and is rewritten in place every
:data:`TERMINAL_REFRESH_S` seconds (pytest's pass dots for benchmark items are left out, so the line owns
its row); elsewhere (CI logs, a pipe) one line is written every :data:`LOG_REFRESH_S` seconds, the first
after that long, so a short run adds nothing, and the last figures at the end of the session.
Energy figures carry their provenance: an estimate says so.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Mapping

from pytest_ipw.analysis.metrics import record_energy

#: seconds between refreshes of the in-place line in a terminal
TERMINAL_REFRESH_S = 2.0
#: seconds between lines when output is not a terminal (a 3-minute run writes about 18)
LOG_REFRESH_S = 10.0
#: pytest's own verbosity at or below which ``--ipw-progress=auto`` stays silent (``-q -q``)
QUIET_VERBOSITY = -2


def format_duration(seconds: float) -> str:
    """``0:54``, ``12:03``, ``1:02:09``."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class _System:
    """Running sums of one model × accelerator."""

    queries: int = 0
    correct: int = 0
    joules: float = 0.0
    watts: float = 0.0
    metered: int = 0  # records with an energy figure (a remote backend's have none)
    estimated: bool = False

    def add(self, record: Mapping[str, Any]) -> None:
        self.queries += 1
        self.correct += bool(record.get("correct"))
        try:
            joules, watts = record_energy(record)
        except (KeyError, TypeError, ValueError):
            joules = watts = None
        if joules is not None and watts is not None and math.isfinite(joules) and math.isfinite(watts):
            self.joules += joules
            self.watts += watts
            self.metered += 1
        if record.get("provenance") != "measured":
            self.estimated = True

    def describe(self, name: str) -> str:
        energy = "no energy figure"
        if self.metered:
            energy = f"{self.joules / self.metered:.3g} J/query {self.watts / self.metered:.3g} W"
            if self.estimated:
                energy += " (ESTIMATED)"
        return f"{name} accuracy {self.correct / self.queries:.2f}, {energy}"


class RunProgress:
    """Queries done of the total, elapsed time, ETA, running accuracy, J/query and W per model × accelerator."""

    def __init__(self, total: int = 0, started: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.clock = clock
        self.started = clock() if started is None else started
        self.done = 0
        self.resumed = 0
        self.failed = 0  # test items that failed (a crash, a benchmark's own assert)
        self.systems: dict[str, _System] = {}

    def add(self, record: Mapping[str, Any], resumed: bool = False) -> None:
        self.done += 1
        self.resumed += resumed
        name = f"{record.get('model')}@{record.get('accelerator')}"
        self.systems.setdefault(name, _System()).add(record)

    def eta_s(self) -> float | None:
        """Seconds left at the rate of the queries run in this process so far (resumed ones cost nothing)."""
        fresh = self.done - self.resumed
        left = self.total - self.done
        if fresh <= 0 or left <= 0:
            return 0.0 if left <= 0 and self.total else None
        return (self.clock() - self.started) / fresh * left

    def line(self) -> str:
        elapsed = self.clock() - self.started
        total = max(self.total, self.done)
        share = f" ({self.done / total:.0%})" if total else ""
        parts = [f"ipw: {self.done}/{total or '?'} queries{share}"]
        if self.resumed:
            parts[0] += f", {self.resumed} resumed"
        eta = self.eta_s()
        parts.append(f"{format_duration(elapsed)} elapsed" + (f", ETA {format_duration(eta)}" if eta is not None else ""))
        if self.failed:
            parts.append(f"{self.failed} failed")
        parts.extend(system.describe(name) for name, system in self.systems.items())
        return " | ".join(parts)


class ProgressWriter:
    """Writes :class:`RunProgress` through pytest's terminal reporter: in place in a terminal, a line per
    refresh elsewhere. ``terminal`` is decided when the first line is due (a conftest or plugin may change
    the reporter's ``isatty`` at configure time). ``uncaptured`` suspends pytest's output capture while a line
    is written: records arrive during a test, whose output pytest would otherwise keep."""

    def __init__(self, reporter: Any, progress: RunProgress, always: bool = False,
                 uncaptured: Callable[[], ContextManager[Any]] = contextlib.nullcontext):
        self.reporter = reporter
        self.uncaptured = uncaptured
        self.always = always  # --ipw-progress=on: the last figures even after a short run
        self.progress = progress
        self.clock = progress.clock
        self.last_write: float | None = None
        self.in_place = False  # the row the cursor is on holds our line (rewrite it, do not add one)
        self.wrote = False
        self.finished = False

    @property
    def terminal(self) -> bool:
        isatty = getattr(self.reporter, "isatty", False)  # a method since pytest 8.?, an attribute before
        return bool(isatty() if callable(isatty) else isatty) and getattr(self.reporter, "verbosity", 0) <= 0

    def interval(self) -> float:
        return TERMINAL_REFRESH_S if self.terminal else LOG_REFRESH_S

    def update(self) -> None:
        """After each record: the last line once every query is done, else a refresh when one is due (in a
        terminal the first line comes at once; in a log, one interval after the start)."""
        if self.finished:
            return
        if self.progress.total and self.progress.done >= self.progress.total:
            if self.terminal:  # now, before pytest writes its [100%] below
                self.finish()
            return  # in a log, at the end of the session (after the last item's dot)
        if self.terminal and not self.wrote:
            self.write()
            return
        since = self.clock() - (self.last_write if self.last_write is not None else self.progress.started)
        if since >= self.interval():
            self.write()

    def write(self) -> None:
        self.last_write = self.clock()
        self.wrote = True
        with self.uncaptured():
            self._write(self.progress.line())

    def _write(self, line: str) -> None:
        writer = getattr(self.reporter, "_tw", None)
        if not self.terminal:
            self.reporter.ensure_newline()
            if getattr(writer, "width_of_current_line", 0) != 0:  # dots or [100%] on a row pytest keeps open
                self.reporter.write("\n")
            self.reporter.write_line(line)
            return
        width = getattr(writer, "fullwidth", 80)
        if len(line) >= width:  # a wrapped row could not be rewritten in place
            line = line[: max(10, width - 4)] + "..."
        # A row holding our earlier line measures -1 wide (its carriage return); on any other row (the file
        # name pytest writes before the first dot) the line starts a row below it. Not ensure_newline(): it
        # makes pytest write the file name again before each item.
        if not (self.in_place and getattr(writer, "width_of_current_line", 0) < 0):
            self.reporter.write("\n")
        self.reporter.rewrite(line, erase=True)
        flush = getattr(self.reporter, "flush", None)
        if flush is not None:
            flush()
        self.in_place = True

    def finish(self) -> None:
        """The last figures, once (all queries done, or the session ends early), when a line was due or shown
        during the run; then the row is closed so pytest's own output goes below it."""
        if self.finished:
            return
        self.finished = True
        if not (self.wrote or self.terminal or self.always):
            return  # a short run in a log: no line was due, none is added at the end
        self.write()
        if self.terminal:
            with self.uncaptured():
                self.reporter.write("\n")
        self.in_place = False
