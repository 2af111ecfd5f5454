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

    def record(self, query: Query, rest: Sequence[Query] = ()) -> dict[str, Any]:
        """The record of ``query``: taken from the journal when an interrupted run finished it, else run now.

        Raises :class:`~pytest_ipw.core.errors.IPWUsageError` when the run cannot go on (a server gone).
        """
        session, target = self.session, self.target
        key = (self.benchmark, target.model.name, target.device.profile.name, query.id)
        record = session.resumed.get(key)
        if record is not None:
            return record
        if session.options.batch_size > 1:  # this query and the next ones in one engine call; they share the energy
            batcher = session.batcher(target.id)
            generation, measurement = batcher.answer(query, [*rest, *self.upcoming()], self.model, self.meter)
        else:
            with self.meter.window() as window:
                generation = self.model.generate(query.prompt)
            measurement = window.measurement  # carries its wall-clock window (xdist sharing) and sensor readings
        # after the model's window: a judge's own window never adds to the model's energy
        result = score(query, generation.text, judge=session.judge_scorer(self.meter))
        record = make_record(query=query, model=target.model.name, accelerator=target.device.profile.name,
                             benchmark=self.benchmark, generation=generation, measurement=measurement, score=result,
                             energy_basis=session.options.energy)
        session.journal.append(record)
        return record
