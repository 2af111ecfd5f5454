"""The main IPW benchmark: every selected query, on every model × accelerator.

A wrong answer is recorded, not failed: the thresholds below judge the whole run.
"""

import pytest


@pytest.mark.ipw(min_accuracy=0.2)
def test_answer(ipw_bench):
    record = ipw_bench()
    assert record["joules"] >= 0
