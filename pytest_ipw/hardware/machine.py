"""Facts about this machine and run environment, recorded with every result file."""

from __future__ import annotations

import os
import platform
import socket
import sys
from typing import Any, Iterable

from pytest_ipw.hardware.profiles import LocalDevice, cpu_brand


def machine_info(devices: Iterable[LocalDevice] = ()) -> dict[str, Any]:
    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dependency
        memory_gb = None
    return {
        "node": socket.gethostname(),
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "cpu": cpu_brand(),
        "cpu_count": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "accelerators": [
            {"profile": d.profile.name, "device_name": d.device_name, "index": d.index} for d in devices
        ],
    }
