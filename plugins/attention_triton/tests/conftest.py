"""Without a CUDA device the kernels run in Triton's CPU interpreter.

Triton decides between compiling and interpreting when a kernel is defined, so the variable must
be set before any test module imports the plugin's kernel modules; conftest runs first.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
