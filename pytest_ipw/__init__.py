"""pytest-ipw: measure intelligence per watt of local language-model inference with pytest."""

__version__ = "0.1.0"
