"""``python -m pytest_ipw`` is the ``pytest-ipw`` command."""

import sys

from pytest_ipw.cli import main

sys.exit(main())
