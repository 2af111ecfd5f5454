"""Power meters: one module per sensor behind the :class:`~pytest_ipw.meters.base.Meter` interface."""

from .base import ESTIMATED, MEASURED, Measurement, Meter, Window

__all__ = ["ESTIMATED", "MEASURED", "Measurement", "Meter", "Window"]
