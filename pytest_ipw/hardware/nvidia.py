"""Which NVIDIA GPUs this process may use, as NVML indices (device detection and the NVML meter share it)."""

from __future__ import annotations

from typing import Any


def nvml_text(value: Any) -> str:
    """NVML returns bytes from older bindings and str from newer ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


def visible_gpu_indices(pynvml: Any, cuda_visible_devices: str | None) -> list[int]:
    """NVML indices of the GPUs a CUDA process may use, in CUDA_VISIBLE_DEVICES order.

    Integer entries are taken as NVML (PCI bus) order, which is CUDA's order only with
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; UUIDs are unambiguous. Like CUDA, an invalid entry ends the list.
    """
    count = int(pynvml.nvmlDeviceGetCount())
    if cuda_visible_devices is None:
        return list(range(count))
    uuids = {}
    if any(not e.strip().isdigit() for e in cuda_visible_devices.split(",") if e.strip()):
        for index in range(count):
            uuids[nvml_text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(index)))] = index
    chosen: list[int] = []
    for entry in (e.strip() for e in cuda_visible_devices.split(",")):
        index: int | None = None
        if entry.isdigit():
            index = int(entry) if int(entry) < count else None
        elif entry.startswith("GPU-"):
            matches = [i for u, i in uuids.items() if u.startswith(entry)]
            index = matches[0] if len(matches) == 1 else None
        elif entry.startswith("MIG-"):
            # a MIG instance has no power sensor of its own: its parent GPU is measured
            try:
                mig = pynvml.nvmlDeviceGetHandleByUUID(entry)
                index = int(pynvml.nvmlDeviceGetIndex(pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)))
            except pynvml.NVMLError:
                index = None
        if index is None:
            break
        if index not in chosen:
            chosen.append(index)
    return chosen
