"""One query, start to finish: generate under the meter, score, make the record, write it to the journal.

The ``ipw_bench`` fixture is a thin wrapper around :class:`BenchStep`; everything that decides a record's
numbers happens here, so it can be read (and tested) without pytest's fixture machinery.

A query the backend cannot answer (:class:`~pytest_ipw.backends.base.QueryFailed`: context overflow, a
rejected request, a timeout, a runtime error for that input) still gets a record: wrong, with ``error`` set
and the energy of the window that ran. ``--ipw-on-error`` then decides what the run does with it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from pytest_ipw.backends.base import TRANSIENT_KINDS, Generation, QueryFailed
from pytest_ipw.queries.schema import Query
from pytest_ipw.run.records import FAILED_SCORE, failed_generation, make_record
from pytest_ipw.scoring.scorers import score

if TYPE_CHECKING:
    from pytest_ipw.run.session import IPWSession, Target

#: this many transient failures (timeouts, runtime errors) in a row mean the backend is broken, not the queries
BROKEN_AFTER = 3


class BenchStep:
    """Measures, scores and records the queries of one test item (one target, one benchmark function).

    ``upcoming`` lists the queries the following test items will run for the same target and benchmark; a
    batching backend (``--ipw-batch-size``) answers them together with this one.
    """

    def __init__(self, session: IPWSession, target: Target, model: Any, meter: Any, benchmark: str,
                 upcoming: Callable[[], Sequence[Query]] = list):
        self.session = session
        self.target = target
        self.model = model
        self.meter = meter
        self.benchmark = benchmark
        self.upcoming = upcoming

    def records(self, query: Query, rest: Sequence[Query] = ()) -> list[dict[str, Any]]:
        """The records of every round of ``query`` (``--ipw-repeat``; one round by default)."""
        return [self.record(query, rest, round_number) for round_number in range(1, self.session.options.repeat + 1)]

    def record(self, query: Query, rest: Sequence[Query] = (), round_number: int = 1) -> dict[str, Any]:
        """The record of ``query`` (in round ``round_number``): taken from the journal when an interrupted run
        finished it, else run now.

        Raises :class:`~pytest_ipw.core.errors.IPWUsageError` when the run cannot go on (a server gone).
        """
        session, target = self.session, self.target
        key = (self.benchmark, target.model.name, target.device.profile.name, query.id, round_number)
        record = session.resumed.get(key)
        if record is not None and (record.get("error") or {}).get("kind") not in TRANSIENT_KINDS:
            return record  # a timeout or a runtime error may not happen again: such a query runs again
        cache_reset = None
        if session.options.repeat > 1:
            # every round starts from an empty prompt cache: a cached prompt would hide its prefill cost
            reset = getattr(self.model, "reset_prefix_cache", None)  # a user's own model object may lack it
            cache_reset = bool(reset()) if reset is not None else False
        marks = bool(getattr(self.model, "marks_first_token", False))
        missing = None if marks else f"the {getattr(self.model, 'kind', 'model')} backend does not report its first token"
        answer: Generation | QueryFailed
        if session.options.batch_size > 1:  # this query and the next ones in one engine call; they share the energy
            batcher = session.batcher(target.id)
            answer, measurement = batcher.answer(query, [*rest, *self.upcoming()], self.model, self.meter)
            seconds = measurement.seconds
            missing = "batched: the queries of one engine call share one window"
        else:
            started = time.perf_counter()
            with self.meter.window() as window:
                on_first_token = getattr(window, "mark", None) if marks else None
                try:
                    if on_first_token is not None:
                        answer = self.model.generate(query.prompt, on_first_token=on_first_token)
                    else:
                        answer = self.model.generate(query.prompt)
                except QueryFailed as failure:  # inside the window: the energy it cost is this query's
                    answer = failure
            seconds = time.perf_counter() - started
            measurement = window.measurement  # carries its wall-clock window (xdist sharing) and sensor readings
        if isinstance(answer, QueryFailed):
            failure, generation, result = answer, failed_generation(answer, seconds), FAILED_SCORE
            missing = f"the query failed ({answer.kind}) before any token"
        else:
            failure, generation = None, answer
            # after the model's window: a judge's own window never adds to the model's energy
            result = score(query, generation.text, judge=session.judge_scorer(self.meter))
        record = make_record(query=query, model=target.model.name, accelerator=target.device.profile.name,
                             benchmark=self.benchmark, generation=generation, measurement=measurement, score=result,
                             energy_basis=session.options.energy, phase_missing=missing, round_number=round_number,
                             prefix_cache_reset=cache_reset, failure=failure)
        session.journal.append(record)
        return record

    def stop_reason(self, record: dict[str, Any]) -> str | None:
        """Why the run must stop after ``record`` (``--ipw-on-error=stop``, or a backend that keeps failing), or
        None. Called once the record is published, so it is reported either way."""
        error = record.get("error")
        streaks = self.session.failure_streaks
        if not error:
            streaks[self.target.id] = 0
            return None
        where = f"query {record['query_id']} failed ({error['kind']}: {error['message']})"
        if self.session.options.on_error == "stop":
            return f"--ipw-on-error=stop: {where}; the queries before it are reported"
        streak = streaks.get(self.target.id, 0) + 1 if error["kind"] in TRANSIENT_KINDS else 0
        streaks[self.target.id] = streak
        if streak >= BROKEN_AFTER:
            return (f"{streak} queries in a row failed with {error['kind']}, the last: {where}. The backend, not "
                    "the queries, looks broken: the run stops (the failed queries are recorded; --ipw-resume "
                    "runs them again)")
        return None
