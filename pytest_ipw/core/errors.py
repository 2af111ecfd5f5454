"""The exceptions a user can act on: a problem with their input or environment, and a sensor that is not usable here."""

from __future__ import annotations


class IPWUsageError(Exception):
    """A problem with the user's input or environment, with a message that names the fix.

    The plugin turns it into a clean pytest usage error (no traceback); library code raises it
    wherever it first knows enough to name the thing and the fix.
    """


class MeterUnavailable(Exception):
    """A sensor is not usable on this machine; the message says why and what would fix it.

    Raised while choosing a meter (``pytest_ipw.meters``) and while detecting devices (``pytest_ipw.hardware``);
    the registry turns it into a fallback with its reason, or into an error for an explicit ``--ipw-meter``.
    """
