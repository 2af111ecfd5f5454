"""The one exception type for problems a user can fix (bad option, bad file, missing model...)."""

from __future__ import annotations


class IPWUsageError(Exception):
    """A problem with the user's input or environment, with a message that names the fix.

    The plugin turns it into a clean pytest usage error (no traceback); library code raises it
    wherever it first knows enough to name the thing and the fix.
    """
