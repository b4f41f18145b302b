"""Free memory of a device and the share of it sparkfold may plan with.

One place for the rule that keeps a DGX Spark responsive: its GB10 GPU shares 128 GB of
LPDDR5X with the CPU (unified memory), and running that pool out freezes the whole machine
rather than raising an out-of-memory error. So on an integrated GPU, and on the CPU, sparkfold
plans with :data:`UNIFIED_FRACTION` of the free memory; on a discrete GPU with
:data:`DISCRETE_FRACTION`. The doctor's length estimate, predict's length check, the batch
runner's placement and the automatic chunk size all use :func:`usable_memory`.
"""

import os
from pathlib import Path

__all__ = [
    "DISCRETE_FRACTION",
    "UNIFIED_FRACTION",
    "is_unified",
    "meminfo",
    "usable_memory",
]

#: Share of free memory usable on unified memory (integrated GPU such as GB10) and on the CPU.
UNIFIED_FRACTION = 0.8
#: Share of free memory usable on a discrete GPU.
DISCRETE_FRACTION = 0.9
#: RAM assumed when the system does not report it.
_FALLBACK_RAM = 8 << 30


def meminfo() -> tuple[int | None, int | None]:
    """(total, available) system RAM in bytes (``/proc/meminfo``, else ``sysconf``)."""
    try:
        fields = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0]) * 1024
        return fields.get("MemTotal"), fields.get("MemAvailable", fields.get("MemFree"))
    except (OSError, ValueError, IndexError):
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError, AttributeError):
            return None, None


def is_unified(device) -> bool:
    """Whether ``device`` is a GPU sharing system memory (``is_integrated``, e.g. GB10)."""
    import torch  # lazily: the doctor and the CLI import this module without torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    props = torch.cuda.get_device_properties(device.index or 0)
    return bool(getattr(props, "is_integrated", False))


def usable_memory(device) -> tuple[int, float]:
    """``(free bytes, usable fraction)`` of ``device``; plan with ``fraction * free``.

    CUDA: ``torch.cuda.mem_get_info`` (on unified memory this is the shared pool) with
    :data:`UNIFIED_FRACTION` or :data:`DISCRETE_FRACTION`. CPU: available RAM with
    :data:`UNIFIED_FRACTION`.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device.index or 0)
        return int(free), (UNIFIED_FRACTION if is_unified(device) else DISCRETE_FRACTION)
    _, available = meminfo()
    return int(available if available is not None else _FALLBACK_RAM), UNIFIED_FRACTION
