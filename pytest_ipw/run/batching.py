"""``--ipw-batch-size=N``: run N queries per engine call on a batching backend (vLLM), one test each.

Each test still records one query. The first test of a batch runs its query together with the next
N-1 queries its test items will ask for (same model × accelerator and benchmark, in run order), under
one meter window; every query of the batch then gets 1/N of that window's energy and time (the batch's
mean power), its own tokens, the batch's latency, and a ``batched:N`` meter flag. The following tests
take their answer from the batch without running the model again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence


from pytest_ipw.backends.base import Generation


def split_measurement(measurement: Any, n: int) -> Any:
    """One of ``n`` equal shares of a window: energy and time divided, so power stays the batch's."""
    if n <= 1:
        return measurement
    parts = tuple(split_measurement(p, n) for p in getattr(measurement, "parts", ()) or ())
    changes: dict[str, Any] = {"joules": measurement.joules / n, "seconds": measurement.seconds / n,
                               "flags": tuple(measurement.flags) + (f"batched:{n}",)}
    if parts:
        changes["parts"] = parts
    for name in ("joules_active",):  # meters that also report the energy above idle
        value = getattr(measurement, name, None)
        if isinstance(value, (int, float)) and name in {f.name for f in dataclasses.fields(measurement)}:
            changes[name] = value / n
    return dataclasses.replace(measurement, **changes)


class Batcher:
    """Answers for queries of one target, generated ``size`` at a time."""

    def __init__(self, size: int):
        self.size = size
        self._ready: dict[str, tuple[Generation, Any]] = {}

    def answer(self, query: Any, upcoming: Sequence[Any], backend: Any, meter: Any) -> tuple[Generation, Any]:
        """The generation and measurement share for ``query``; runs a batch with ``upcoming`` if needed."""
        if query.id not in self._ready:
            batch = [query]
            for other in upcoming:
                if len(batch) >= self.size:
                    break
                if other.id != query.id and other.id not in self._ready and all(other.id != b.id for b in batch):
                    batch.append(other)
            with meter.window() as window:
                generations = backend.generate_batch([q.prompt for q in batch])
            share = split_measurement(window.measurement, len(batch))
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
