"""Power meters: one module per sensor behind the :class:`~pytest_ipw.meters.base.Meter` interface.

``base`` holds the interface, its errors (``MeterUnavailable``, ``MeterFailure``), the gauge sampler and
the integration; ``registry`` parses ``--ipw-meter`` and picks a meter; ``trace`` splits energy among
windows; ``combined`` sums parts. Sensor modules (nvml, rapl, powermetrics, ioreport, prometheus, replay,
estimate) import only ``base``, the hardware layer and core. May import hardware and core.
"""

from .base import ESTIMATED, MEASURED, Measurement, Meter, Window

__all__ = ["ESTIMATED", "MEASURED", "Measurement", "Meter", "Window"]
