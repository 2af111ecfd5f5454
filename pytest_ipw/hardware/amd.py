"""Which AMD GPUs this process may use, through AMD SMI (device detection and the amdsmi meter share it).

``amdsmi`` is imported only when called: it is an optional package that must match the installed ROCm.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, Callable

from pytest_ipw.core.errors import MeterUnavailable

#: values that mean "not available": UINT32/UINT64 max (``energy_accumulator = UINT_MAX`` on RDNA3/RDNA4)
INVALID_VALUES = frozenset({0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF})


def _number(value: Any) -> float | None:
    """A reading as a number, or None for "N/A", a sentinel or anything else that is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value in INVALID_VALUES or value < 0:
        return None
    return float(value)


def _serial(amdsmi: Any, handle: Any) -> int | None:
    """The GPU's unique id (``asic_serial``, the hex behind ROCr's ``GPU-`` UUIDs), or None when unknown."""
    try:
        text = str(amdsmi.amdsmi_get_gpu_asic_info(handle).get("asic_serial", ""))
        value = int(text, 16)
    except (amdsmi.AmdSmiException, ValueError, TypeError, AttributeError):
        return None
    return value or None


def _uuid_serial(entry: str) -> int | None:
    """``GPU-8d1457e2c20f59d2`` (ROCr's UUID form) -> its unique id, or None."""
    if not entry.upper().startswith("GPU-"):
        return None
    try:
        return int(entry[4:], 16)
    except ValueError:
        return None


def _pick(entries: str, candidates: list[int], serial_of: Callable[[int], int | None]) -> list[int]:
    """Apply one visibility list to ``candidates``: indices into it, or UUIDs; an invalid entry ends it."""
    chosen: list[int] = []
    for entry in (e.strip() for e in entries.split(",")):
        index: int | None = None
        if entry.isdigit():
            index = candidates[int(entry)] if int(entry) < len(candidates) else None
        elif (wanted := _uuid_serial(entry)) is not None:
            matches = [i for i in candidates if serial_of(i) == wanted]
            index = matches[0] if len(matches) == 1 else None
        if index is None:
            break
        if index not in chosen:
            chosen.append(index)
    return chosen


def visible_gpu_indices(amdsmi: Any, environ: dict[str, str] | None = None) -> list[int]:
    """AMD SMI indices of the GPUs a ROCm process may use, in the order it sees them.

    ``ROCR_VISIBLE_DEVICES`` first (indices or ``GPU-`` UUIDs), then ``HIP_VISIBLE_DEVICES`` (or, unset,
    ``CUDA_VISIBLE_DEVICES``, which HIP reads the same way) indexing what is left. An invalid entry ends a list.
    """
    environ = os.environ if environ is None else environ
    handles = amdsmi.amdsmi_get_processor_handles()
    serials: dict[int, int | None] = {}

    def serial_of(index: int) -> int | None:
        if index not in serials:
            serials[index] = _serial(amdsmi, handles[index])
        return serials[index]

    visible = list(range(len(handles)))
    rocr = environ.get("ROCR_VISIBLE_DEVICES")
    if rocr is not None:
        visible = _pick(rocr, visible, serial_of)
    hip = environ.get("HIP_VISIBLE_DEVICES", environ.get("CUDA_VISIBLE_DEVICES"))
    if hip is not None:
        visible = _pick(hip, visible, serial_of)
    return visible


def gpu_name(amdsmi: Any, handle: Any) -> str:
    """The marketing name AMD SMI reports (``AMD Instinct MI300X``), else "AMD GPU"."""
    try:
        name = str(amdsmi.amdsmi_get_gpu_asic_info(handle).get("market_name") or "")
    except amdsmi.AmdSmiException:
        name = ""
    return name if name and name != "N/A" else "AMD GPU"


def visible_gpus(amdsmi: Any, environ: dict[str, str] | None = None) -> list[tuple[int, str]]:
    """(AMD SMI index, name) of the GPUs this process may use; amdsmi must be initialised."""
    handles = amdsmi.amdsmi_get_processor_handles()
    return [(index, gpu_name(amdsmi, handles[index])) for index in visible_gpu_indices(amdsmi, environ)]


def import_amdsmi() -> Any:
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # amdsmi prints when libamd_smi.so is missing
            import amdsmi
    except ImportError:
        raise MeterUnavailable("the amdsmi package is not installed: install the one that matches your ROCm "
                               "(`pip install /opt/rocm/share/amd_smi`, or `pip install amdsmi==X.Y` for ROCm X.Y)") from None
    except Exception as exc:  # OSError (no libamd_smi.so), KeyError/AttributeError (ROCm version mismatch)
        raise MeterUnavailable(f"the amdsmi package cannot load AMD SMI ({type(exc).__name__}: {exc}); install the "
                               "amdsmi version that matches your ROCm and set ROCM_PATH") from None
    return amdsmi
