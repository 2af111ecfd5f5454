"""Helpers shared by the pytester-based tests."""

from __future__ import annotations

from pathlib import Path

#: the repository, the tests' data and the real captured hardware outputs (wherever a test file lives)
REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
REAL_SAMPLES = TEST_DATA / "real-samples"

FIXED_METER_CONFTEST = '''
import pytest
from pytest_ipw.meters.base import MEASURED, Measurement, Meter
from pytest_ipw.plugin import SESSION_KEY

class FixedMeter(Meter):
    name = "fixed"
    provenance = MEASURED
    domain = "{domain}"

    @property
    def sensor(self):
        return "fixed test meter"

    def _begin(self):
        pass

    def _end(self):
        return Measurement(joules={joules}, seconds=0.5, sensor=self.sensor, provenance=MEASURED, domain="{domain}")

@pytest.fixture(scope="session")
def power_meter(ipw_target, request):
    meter = FixedMeter()
    request.config.stash[SESSION_KEY].meter_info[ipw_target.id] = meter.describe()
    return meter
'''


def fixed_meter_conftest(joules: float = 2.0, domain: str = "system") -> str:
    """A conftest whose ``power_meter`` override costs every window ``joules`` over 0.5 s, measured:
    comparisons and aggregates then see no measurement noise at all."""
    return FIXED_METER_CONFTEST.format(joules=joules, domain=domain)
