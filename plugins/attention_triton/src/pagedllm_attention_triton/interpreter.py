"""Whether Triton kernels run on the CPU through Triton's interpreter instead of a GPU."""

from __future__ import annotations

import os

# Triton reads this when it is imported; it must be "1" before that to run kernels on the CPU.
INTERPRET_ENV = "TRITON_INTERPRET"


def interpreter_enabled() -> bool:
    return os.environ.get(INTERPRET_ENV) == "1"
