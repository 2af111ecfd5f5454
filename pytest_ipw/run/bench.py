"""One query, start to finish: generate under the meter, score, make the record, write it to the journal.

The ``ipw_bench`` fixture is a thin wrapper around :class:`BenchStep`; everything that decides a record's
numbers happens here, so it can be read (and tested) without pytest's fixture machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from pytest_ipw.queries.schema import Query
from pytest_ipw.run.records import make_record
from pytest_ipw.scoring.scorers import score

if TYPE_CHECKING:
    from pytest_ipw.run.session import IPWSession, Target


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
        if record is not None:
            return record
        cache_reset = None
        if session.options.repeat > 1:
            # every round starts from an empty prompt cache: a cached prompt would hide its prefill cost
            reset = getattr(self.model, "reset_prefix_cache", None)  # a user's own model object may lack it
            cache_reset = bool(reset()) if reset is not None else False
        marks = bool(getattr(self.model, "marks_first_token", False))
        missing = None if marks else f"the {getattr(self.model, 'kind', 'model')} backend does not report its first token"
        if session.options.batch_size > 1:  # this query and the next ones in one engine call; they share the energy
            batcher = session.batcher(target.id)
            generation, measurement = batcher.answer(query, [*rest, *self.upcoming()], self.model, self.meter)
            missing = "batched: the queries of one engine call share one window"
        else:
            with self.meter.window() as window:
                on_first_token = getattr(window, "mark", None) if marks else None
                if on_first_token is not None:
                    generation = self.model.generate(query.prompt, on_first_token=on_first_token)
                else:
                    generation = self.model.generate(query.prompt)
            measurement = window.measurement  # carries its wall-clock window (xdist sharing) and sensor readings
        # after the model's window: a judge's own window never adds to the model's energy
        result = score(query, generation.text, judge=session.judge_scorer(self.meter))
        record = make_record(query=query, model=target.model.name, accelerator=target.device.profile.name,
                             benchmark=self.benchmark, generation=generation, measurement=measurement, score=result,
                             energy_basis=session.options.energy, phase_missing=missing, round_number=round_number,
                             prefix_cache_reset=cache_reset)
        session.journal.append(record)
        return record
