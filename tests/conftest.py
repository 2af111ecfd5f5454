"""Shared test set-up.

Inline pytester runs drop the modules first imported inside them, and C extensions (numpy, pyarrow,
pandas, llama_cpp...) cannot be imported twice in one process: import every heavy module the plugin
loads lazily once here, before any inline run.
"""

import datasets  # noqa: F401
import llama_cpp  # noqa: F401
import matplotlib.backends.backend_agg  # noqa: F401
import matplotlib.figure  # noqa: F401
import matplotlib.lines  # noqa: F401
import matplotlib.patches  # noqa: F401
import PIL.PngImagePlugin  # noqa: F401
import numpy  # noqa: F401
import pandas  # noqa: F401
import psutil  # noqa: F401
import pyarrow.parquet  # noqa: F401
import pynvml  # noqa: F401
import sqlite3  # noqa: F401  (judge verdict cache)
import ssl  # noqa: F401  (openai+https backend)
import tabulate  # noqa: F401
