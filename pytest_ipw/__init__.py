"""pytest-ipw: measure intelligence per watt of local language-model inference with pytest."""

from pytest_ipw.core.warnings import (
    EstimatedEnergyWarning,
    IPWWarning,
    MeterFallbackWarning,
    NoBaselineWarning,
    PartialBaselineWarning,
    QueryErrorsWarning,
    SharedEnergyWarning,
    TruncatedAnswersWarning,
    UnpairedGateWarning,
)

__version__ = "0.1.0"

__all__ = ["EstimatedEnergyWarning", "IPWWarning", "MeterFallbackWarning", "NoBaselineWarning",
           "PartialBaselineWarning", "QueryErrorsWarning", "SharedEnergyWarning", "TruncatedAnswersWarning",
           "UnpairedGateWarning", "__version__"]
