"""``--ipw-batch-size=N``: run N queries per engine call on a batching backend (vLLM), one test each.

Each test still records one query. The first test of a batch runs its query together with the next
N-1 queries its test items will ask for (same model × accelerator and benchmark, in run order), under
one meter window; every query of the batch then carries that window with a ``batched:N`` meter flag, its
own tokens and the batch's latency, and is charged by the one rule for every path
(:func:`pytest_ipw.records.charge`): 1/N of the window's energy over the window's whole length, since
each of the N queries was in flight all along (so its power is the device's power / N, as for N xdist
workers sharing a device). The following tests take their answer from the batch without running the
model again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence


from pytest_ipw.backends.base import Generation, QueryFailed


def batch_measurement(measurement: Any, n: int) -> Any:
    """The batch window's measurement, flagged ``batched:N``: the record of each query takes its share
    from it by the one rule (``records.charge``), never a division here."""
    if n <= 1:
        return measurement
    return dataclasses.replace(measurement, flags=tuple(measurement.flags) + (f"batched:{n}",))


class Batcher:
    """Answers for queries of one target, generated ``size`` at a time."""

    def __init__(self, size: int):
        self.size = size
        self._ready: dict[str, tuple[Generation | QueryFailed, Any]] = {}

    def answer(self, query: Any, upcoming: Sequence[Any], backend: Any, meter: Any) -> tuple[Generation | QueryFailed, Any]:
        """The generation (or the query's failure) and measurement share for ``query``; runs a batch with
        ``upcoming`` if needed."""
        if query.id not in self._ready:
            batch = [query]
            for other in upcoming:
                if len(batch) >= self.size:
                    break
                if other.id != query.id and other.id not in self._ready and all(other.id != b.id for b in batch):
                    batch.append(other)
            with meter.window() as window:
                generations = backend.generate_batch([q.prompt for q in batch])
            share = batch_measurement(window.measurement, len(batch))
            for member, generation in zip(batch, generations):
                self._ready[member.id] = (generation, share)
        return self._ready.pop(query.id)


def upcoming_queries(item: Any, items: Sequence[Any]) -> list[Any]:
    """The queries the test items after ``item`` will run for the same target and benchmark function."""
    try:
        start = items.index(item) + 1
    except ValueError:
        return []
    params = getattr(getattr(item, "callspec", None), "params", {})
    target, function = params.get("ipw_target"), getattr(item, "originalname", None)
    found = []
    for other in items[start:]:
        other_params = getattr(getattr(other, "callspec", None), "params", {})
        if other_params.get("ipw_target") is target and getattr(other, "originalname", None) == function \
                and getattr(other, "module", None) is getattr(item, "module", None):
            query = other_params.get("ipw_query")
            found.extend(getattr(query, "queries", None) or ([query] if query is not None else []))
    return found
