"""Self-consistency: k answers sampled at a temperature above 0 with fixed seeds, then a majority vote over
the answers the query's scorer extracts. Does the extra test-time compute pay for its joules?"""

from __future__ import annotations

from collections import Counter

from pytest_ipw.scoring.scorers import score

SAMPLES = 3
TEMPERATURE = 0.7
SEEDS = tuple(range(1, SAMPLES + 1))  # fixed: the same votes on every run of the same build


def test_self_consistency(ipw_model, power_meter, ipw_query, ipw_record):
    if ipw_record.resumed:  # an interrupted run already answered this query (--ipw-resume)
        return
    generations = []
    for seed in SEEDS:
        with power_meter.window():
            generations.append(ipw_model.generate_sampled(ipw_query.prompt, temperature=TEMPERATURE, seed=seed))
    # vote over what the scorer reads out of each answer; an answer with nothing to read does not vote
    readings = [(score(ipw_query, g.text).extracted, g) for g in generations]
    votes = Counter(extracted for extracted, _ in readings if extracted is not None)
    if votes:
        winner, _ = votes.most_common(1)[0]  # ties: the earliest sample's reading wins (Counter keeps order)
        final = next(g for extracted, g in readings if extracted == winner)
    else:
        final = generations[0]
    ipw_record(final.text, generations=generations)
