"""Process settings for running the model on the CPU: torch's thread count, and keeping freed memory for reuse."""

from __future__ import annotations

import ctypes
import logging
import platform

import torch

logger = logging.getLogger(__name__)

# mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# Allocations up to this size come from the heap rather than from fresh mappings, and up to this much free memory
# at the heap's top stays there.
KEPT_ALLOCATION_BYTES = 1 << 30


def configure_cpu_process(num_cpu_threads: int | None) -> None:
    """Set torch's intra-op threads (when given) and keep freed memory in the process (see
    :func:`keep_freed_memory_in_process`)."""
    if num_cpu_threads is not None:
        torch.set_num_threads(num_cpu_threads)
    keep_freed_memory_in_process()


def keep_freed_memory_in_process() -> bool:
    """Have glibc's malloc serve large allocations from its heap and keep what is freed there; False where the
    C library is not glibc (nothing changes then).

    glibc hands an allocation above its mmap threshold (which it raises as such blocks are freed, to at most
    32 MiB) fresh pages from the kernel and gives them back on ``free``. A step's largest tensor is above it on
    the CPU (the float32 logits of 200 rows over a 49,152-token vocabulary are 39 MB), so every step faults
    those pages in again, one 4 KiB page at a time: on the W1 decode steps that made the LM head's matmul about
    a third slower (docs/benchmarks.md). Allocators such as tcmalloc keep freed memory, which is why vLLM's CPU
    guide preloads one; these two settings give glibc's malloc the same habit, with no preload.
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    kept = mallopt(M_MMAP_THRESHOLD, KEPT_ALLOCATION_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, KEPT_ALLOCATION_BYTES) == 1
    if not kept:
        logger.info("the C library refused mallopt; large CPU tensors are mapped afresh at every allocation")
    return kept
