"""Keeping freed memory in the process: a large tensor allocated again after being freed must not fault its
pages in again (each way measured in a fresh interpreter, since the setting is process-wide)."""

import statistics
import subprocess
import sys

import pytest

from pagedllm_core.worker import cpu_process

PAGES = (64 << 20) // 4096

# Minor page faults of each of 16 allocations of a 64 MiB tensor (zero-filled, so every page is touched).
MEASURE = """
import resource, sys, torch
from pagedllm_core.worker.cpu_process import keep_freed_memory_in_process
if sys.argv[1] == "keep":
    assert keep_freed_memory_in_process()
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.zeros(16 << 20)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def median_page_faults(mode: str) -> float:
    result = subprocess.run([sys.executable, "-c", MEASURE, mode], capture_output=True, text=True, check=True)
    return statistics.median(int(count) for count in result.stdout.split())


@pytest.mark.skipif(not cpu_process.keep_freed_memory_in_process(), reason="the C library is not glibc")
def test_a_freed_large_tensor_is_reused_without_page_faults():
    # By default glibc maps every such allocation afresh, and all its pages fault; kept, the heap grows to hold
    # the first ones (now and then once more), and the rest reuse it.
    assert median_page_faults("default") >= PAGES
    assert median_page_faults("keep") < PAGES / 100
