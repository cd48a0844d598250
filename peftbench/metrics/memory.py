"""Peak memory of *this run*, not of the process's whole life.

On CUDA the allocator's peak counters are reset per run. On CPU, ``getrusage`` only knows the
process-lifetime peak, so a multirun in one process would carry one job's peak into the next;
Linux lets a process reset its own high-water mark (write "5" to /proc/self/clear_refs) and then
reads it back as VmHWM. Where that is unavailable we fall back to the lifetime peak and say so.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> str:
    """Start a new peak window; returns how CPU peaks are measured ('vmhwm' or 'lifetime')."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        _CLEAR_REFS.write_text("5")
        return "vmhwm"
    except OSError:
        return "lifetime"


def _vmhwm_mb() -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    return None


def current_rss_mb() -> float:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def current_mb() -> dict[str, float]:
    """Memory held now, per source (the baseline a run's peak is measured against)."""
    figures = {"cpu_rss": current_rss_mb()}
    if torch.cuda.is_available():
        figures["cuda_allocated"] = torch.cuda.memory_allocated() / 2**20
    return figures


def peak_mb() -> dict[str, float]:
    """Peak memory since the last reset_peak(), in MiB."""
    figures: dict[str, float] = {}
    hwm = _vmhwm_mb()
    if hwm is None:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        hwm = maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024
    figures["peak_rss_mb"] = hwm
    if torch.cuda.is_available():
        figures["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        figures["peak_cuda_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    return figures
