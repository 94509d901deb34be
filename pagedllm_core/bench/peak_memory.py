"""The process's peak memory over one phase of a benchmark (resident set; CUDA allocations too)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakMemory:
    """Call :meth:`reset` before a phase and :meth:`read` after it.

    On Linux the resident-set high-water mark can be reset (``5`` into ``/proc/self/clear_refs``), so
    each phase gets its own peak; elsewhere the peak is the process's since it started.
    """

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            pass
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> int:
        """Peak bytes since :meth:`reset`: resident memory, plus CUDA memory when on a GPU."""
        peak = _peak_resident_bytes()
        if self.device.type == "cuda":
            peak += torch.cuda.max_memory_allocated(self.device)
        return peak


def _peak_resident_bytes() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere
