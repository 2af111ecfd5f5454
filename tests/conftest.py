"""Shared test set-up.

Inline pytester runs drop the modules first imported inside them, and numpy/pyarrow (pulled in by
``datasets``) cannot be imported twice in one process: import them once here, before any inline run.
"""

import datasets  # noqa: F401
import numpy  # noqa: F401
