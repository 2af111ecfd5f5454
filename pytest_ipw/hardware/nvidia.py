"""Which NVIDIA GPUs this process may use, as NVML indices, and which CUDA device number each one is.

Device detection, the NVML meter and the backends that place a model on a GPU (llama.cpp's ``main_gpu``)
share these rules, so the GPU that runs the model is the GPU that is metered.
"""

from __future__ import annotations

import os
from typing import Any

from pytest_ipw.core.errors import IPWUsageError


def nvml_text(value: Any) -> str:
    """NVML returns bytes from older bindings and str from newer ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _pci_order(pynvml: Any, count: int) -> list[int]:
    """NVML indices sorted by PCI bus id (domain, bus, device, function); NVML's own order where unreadable."""
    keys = []
    for index in range(count):
        try:
            bus = nvml_text(pynvml.nvmlDeviceGetPciInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).busId)
            domain, rest = bus.rsplit(":", 2)[0], bus.rsplit(":", 2)[1:]
            device, function = rest[1].split(".")
            keys.append((int(domain, 16), int(rest[0], 16), int(device, 16), int(function, 16)))
        except (AttributeError, ValueError, IndexError, pynvml.NVMLError):
            return list(range(count))
    return sorted(range(count), key=lambda i: keys[i])


def cuda_enumeration(pynvml: Any, cuda_device_order: str | None) -> list[int] | None:
    """NVML indices of every GPU in CUDA's order before ``CUDA_VISIBLE_DEVICES`` applies, or None when that
    order cannot be known: ``FASTEST_FIRST`` (CUDA's default) ranks GPUs by an undocumented speed heuristic,
    so only identical GPUs (ties, in PCI order) have a known order."""
    count = int(pynvml.nvmlDeviceGetCount())
    by_pci = _pci_order(pynvml, count)
    if (cuda_device_order or "FASTEST_FIRST").strip().upper() == "PCI_BUS_ID":
        return by_pci
    names = {nvml_text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)}
    return by_pci if len(names) <= 1 else None


def _unknown_order(what: str) -> IPWUsageError:
    return IPWUsageError(f"{what}: this host has GPUs of different models and CUDA_DEVICE_ORDER is not PCI_BUS_ID, so "
                         "CUDA's device numbers cannot be matched to the metered GPUs. Set CUDA_DEVICE_ORDER=PCI_BUS_ID, "
                         "or list GPU UUIDs (nvidia-smi -L) in CUDA_VISIBLE_DEVICES")


def cuda_visible_nvml_indices(pynvml: Any, cuda_visible_devices: str | None,
                              cuda_device_order: str | None = None) -> list[int]:
    """NVML indices of the GPUs a CUDA process sees, in CUDA ordinal order (ordinal k is entry k).

    Integer entries are CUDA ordinals of :func:`cuda_enumeration`; ``GPU-`` entries are UUIDs (or unique
    prefixes, as CUDA accepts); a ``MIG-`` instance stands for its parent GPU (which has the sensor). Like
    CUDA, an invalid entry ends the list; a GPU listed twice counts once.
    """
    count = int(pynvml.nvmlDeviceGetCount())
    if cuda_visible_devices is None:
        order = cuda_enumeration(pynvml, cuda_device_order)
        if order is None:
            raise _unknown_order("CUDA_VISIBLE_DEVICES is not set")
        return order
    entries = [e.strip() for e in cuda_visible_devices.split(",")]
    order = cuda_enumeration(pynvml, cuda_device_order) if any(e.isdigit() for e in entries) else None
    uuids = {}
    if any(e.startswith("GPU-") for e in entries):
        for index in range(count):
            uuids[nvml_text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(index)))] = index
    chosen: list[int] = []
    for entry in entries:
        index: int | None = None
        if entry.isdigit():
            if order is None:
                raise _unknown_order(f"CUDA_VISIBLE_DEVICES={cuda_visible_devices}")
            index = order[int(entry)] if int(entry) < count else None
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


def visible_gpu_indices(pynvml: Any, cuda_visible_devices: str | None, cuda_device_order: str | None = None) -> list[int]:
    """NVML indices of the GPUs a CUDA process may use: all of them (NVML order) without
    ``CUDA_VISIBLE_DEVICES``, else those it lists, in its order (:func:`cuda_visible_nvml_indices`)."""
    if cuda_visible_devices is None:
        return list(range(int(pynvml.nvmlDeviceGetCount())))
    if cuda_device_order is None:
        cuda_device_order = os.environ.get("CUDA_DEVICE_ORDER")
    return cuda_visible_nvml_indices(pynvml, cuda_visible_devices, cuda_device_order)


def cuda_ordinal(pynvml: Any, nvml_index: int, cuda_visible_devices: str | None,
                 cuda_device_order: str | None) -> int:
    """The CUDA device number (what llama.cpp's ``main_gpu`` and ``torch.device("cuda:N")`` take) of the GPU
    with NVML index ``nvml_index``, in a process with these CUDA_VISIBLE_DEVICES / CUDA_DEVICE_ORDER."""
    visible = cuda_visible_nvml_indices(pynvml, cuda_visible_devices, cuda_device_order)
    if nvml_index not in visible:
        raise IPWUsageError(f"NVML GPU {nvml_index} is not visible to CUDA in this process "
                            f"(CUDA_VISIBLE_DEVICES={cuda_visible_devices}); make it visible, or choose another GPU")
    return visible.index(nvml_index)


def cuda_ordinal_of(nvml_index: int) -> int:
    """:func:`cuda_ordinal` for this process's environment, with NVML opened and closed around it."""
    try:
        import pynvml
    except ImportError:
        raise IPWUsageError("mapping the metered NVIDIA GPU to its CUDA device needs nvidia-ml-py "
                            "(pip install nvidia-ml-py)") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise IPWUsageError(f"NVML could not start ({exc}), so NVML GPU {nvml_index} cannot be matched to a CUDA "
                            "device; check the NVIDIA driver (nvidia-smi)") from None
    try:
        return cuda_ordinal(pynvml, nvml_index, os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("CUDA_DEVICE_ORDER"))
    finally:
        pynvml.nvmlShutdown()
