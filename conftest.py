"""Settings that must be in place before any test module is imported.

Without a CUDA device the Triton plugin's kernels run in Triton's CPU interpreter, which Triton
reads from TRITON_INTERPRET when it is first imported — and transformers' modeling modules import
triton as soon as they are imported anywhere in the session. So it is set here, first.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
