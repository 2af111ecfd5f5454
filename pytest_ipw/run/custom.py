"""Benchmarks that do their own thing: a pipeline (several samples and a vote, a draft and a check, a
retrieval step, several turns) hands over what it measured, and it becomes a record like any other.

The ``ipw_record`` fixture wraps :class:`PipelineRecorder`. Every window opened on the test's meter
during the test is collected (so none can be forgotten); the record's energy is their sum, each window
kept as a part; its latency is the pipeline's wall time; tokens are summed over the generations, and TTFT
is the first generation's.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Sequence

from pytest_ipw.backends.base import Generation
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.meters.base import Measurement
from pytest_ipw.queries.schema import Query
from pytest_ipw.run.records import make_record
from pytest_ipw.scoring.scorers import Score, score

if TYPE_CHECKING:
    from pytest_ipw.run.session import IPWSession, Target


def combine_windows(windows: Sequence[Measurement]) -> Measurement:
    """One measurement for several windows of one meter: joules and seconds summed, flags merged, each
    window kept as a part. Windows of different provenance cannot be summed into one honest figure."""
    if not windows:
        raise IPWUsageError("ipw_record: no energy window was measured in this test; run the model inside "
                            "`with power_meter.window():` (every window opened during the test is counted)")
    if len(windows) == 1:
        return windows[0]
    provenances = {w.provenance for w in windows}
    if len(provenances) > 1:
        raise IPWUsageError("ipw_record: the windows of this test mix measured and estimated energy; measure the "
                            "whole pipeline with one meter (the test's power_meter)")
    flags = tuple(dict.fromkeys(flag for w in windows for flag in w.flags))
    idle = [w.idle_watts for w in windows if w.idle_watts is not None]
    first = windows[0]
    return Measurement(
        joules=math.fsum(w.joules for w in windows), seconds=math.fsum(w.seconds for w in windows),
        sensor=first.sensor, provenance=first.provenance, domain=first.domain,
        samples=sum(w.samples for w in windows), flags=flags, parts=tuple(windows),
        extra={"windows": len(windows)}, idle_watts=idle[0] if len(idle) == len(windows) else None,
        # the pipeline's span on the wall clock; no single set of readings covers several windows, so overlapping
        # xdist workers share a pipeline's energy by the fitted rule (and the record says so)
        started_at=min((w.started_at for w in windows if w.started_at is not None), default=None),
        ended_at=max((w.ended_at for w in windows if w.ended_at is not None), default=None),
    )


def combine_generations(generations: Sequence[Generation], response: str, wall_s: float) -> Generation:
    """The pipeline as one generation: its final response, tokens summed, latency the pipeline's wall time,
    TTFT of the first generation, the last generation's finish reason."""
    if not generations:
        return Generation(text=response, tokens_in=None, tokens_out=0, latency_s=wall_s, ttft_s=None,
                          finish_reason=None, token_source="none given")
    tokens_in = [g.tokens_in for g in generations]
    return Generation(
        text=response,
        tokens_in=None if any(t is None for t in tokens_in) else sum(t for t in tokens_in if t is not None),
        tokens_out=sum(g.tokens_out for g in generations),
        latency_s=wall_s,
        ttft_s=generations[0].ttft_s,
        finish_reason=generations[-1].finish_reason,
        extra={"generations": len(generations)},
        token_source=generations[0].token_source,
    )


class PipelineRecorder:
    """The ``ipw_record`` callable of one test: ``ipw_record(response, generations=[...])``."""

    def __init__(self, session: IPWSession, target: Target, meter: Any, benchmark: str, query: Query | None):
        self.session = session
        self.target = target
        self.meter = meter
        self.benchmark = benchmark
        self.query = query
        self.windows: list[Measurement] = []
        self.recorded: set[str] = set()
        self.open = True
        self.started = time.perf_counter()
        meter.add_listener(self.windows.append)

    def close(self) -> None:
        self.open = False
        self.meter.remove_listener(self.windows.append)

    @property
    def resumed(self) -> dict[str, Any] | None:
        """The record an interrupted run already finished for this test's query (``--ipw-resume``), if any:
        a pipeline can skip its work then, and calling ``ipw_record`` returns this record."""
        if self.query is None:
            return None
        return self.session.resumed.get(self._key(self.query))

    def _key(self, query: Query) -> tuple[str, str, str, str, int]:
        # the journal's key; a pipeline records each query once (round 1: --ipw-repeat repeats ipw_bench only)
        return (self.benchmark, self.target.model.name, self.target.device.profile.name, query.id, 1)

    def __call__(self, response: str, *, generations: Sequence[Generation] = (), query: Query | None = None,
                 correct: bool | None = None, extracted: str | None = None,
                 windows: Sequence[Measurement] | None = None) -> dict[str, Any]:
        """Record the pipeline's final ``response`` for ``query`` (default: the test's query).

        Scored by the query's scorer unless ``correct`` gives the verdict. ``windows`` defaults to every window
        opened on the test's meter since the test began.
        """
        if not self.open:
            raise IPWUsageError("ipw_record was called after its test ended; call it inside the test that measured")
        query = query or self.query
        if query is None:
            raise IPWUsageError("ipw_record needs a query: use it in a test that takes ipw_query, or pass query=")
        if query.id in self.recorded:
            raise IPWUsageError(f"ipw_record: query {query.id!r} was already recorded in this test; record each "
                                "query once (its windows are summed into one record)")
        resumed = self.session.resumed.get(self._key(query))
        if resumed is not None:
            self.recorded.add(query.id)
            return resumed
        measurement = combine_windows(list(self.windows if windows is None else windows))
        wall_s = time.perf_counter() - self.started
        generation = combine_generations(generations, response, wall_s)
        if correct is None:
            verdict = score(query, response, judge=self.session.judge_scorer(self.meter))
        else:
            verdict = Score(correct=bool(correct), unscorable=False, extracted=extracted)
        record = make_record(query=query, model=self.target.model.name, accelerator=self.target.device.profile.name,
                             benchmark=self.benchmark, generation=generation, measurement=measurement, score=verdict,
                             energy_basis=self.session.options.energy)
        record["energy_windows"] = [w.to_dict() for w in measurement.parts] or [measurement.to_dict()]
        record["verdict_source"] = "scorer" if correct is None else "test"
        self.session.journal.append(record)
        self.recorded.add(query.id)
        self.windows.clear()  # windows after this record belong to the next query of the same test
        self.started = time.perf_counter()
        return record

