"""RMSNorm as one C++ call on the CPU, for float32 rows.

torch's CPU ``rms_norm`` is a composite of about ten kernels (square, sum, divide, add, rsqrt, two
multiplies, dtype round trips); on a single-stream decode step, where a row holds a few hundred
values, their dispatch is most of the norm's time, and a model calls it twice per layer. This kernel
does the same arithmetic (``x * rsqrt(mean(x * x) + eps) * weight``, in that order, in float32) in
one pass per row; only the sum of squares is added up in another order than torch's, so results may
differ from ``F.rms_norm`` in the last bit.

The extension compiles on first use on a machine (a few seconds to a minute, needs a C++ compiler
and ninja), then loads from torch's extension cache; without them :func:`load_kernel` returns None
and the caller keeps ``F.rms_norm``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from types import ModuleType

from pagedllm_core.cpp_extensions import compiler_flags

logger = logging.getLogger(__name__)

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>

// out[r] = x[r] * (1 / sqrt(sum(x[r]^2) / hidden + eps)) * weight, rows of float32.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && weight.scalar_type() == torch::kFloat32, "float32 only");
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "CPU tensors only");
  const int64_t hidden = x.size(-1);
  TORCH_CHECK(weight.numel() == hidden, "weight has ", weight.numel(), " values for rows of ", hidden);
  const torch::Tensor input = x.contiguous();
  const torch::Tensor scale_by = weight.contiguous();
  torch::Tensor out = torch::empty_like(input);
  const int64_t rows = hidden ? input.numel() / hidden : 0;
  const float* in = input.data_ptr<float>();
  const float* w = scale_by.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const float epsilon = static_cast<float>(eps);
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = in + r * hidden;
      float* out_row = o + r * hidden;
      float sum = 0.f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < hidden; ++j) sum += row[j] * row[j];
      const float scale = 1.f / std::sqrt(sum / static_cast<float>(hidden) + epsilon);
#pragma omp simd
      for (int64_t j = 0; j < hidden; ++j) out_row[j] = row[j] * scale * w[j];
    }
  });
  return out;
}
"""


@functools.cache
def load_kernel() -> ModuleType | None:
    """The compiled extension, or None (logged once) when it cannot be built here."""
    from torch.utils.cpp_extension import load_inline

    digest = hashlib.sha256((SOURCE + " ".join(compiler_flags())).encode()).hexdigest()[:12]
    try:
        return load_inline(
            name=f"pagedllm_rms_norm_{digest}",
            cpp_sources=[SOURCE],
            functions=["rms_norm"],
            extra_cflags=compiler_flags(),
            extra_ldflags=["-fopenmp"],
        )
    except Exception as error:  # noqa: BLE001 - no compiler or ninja: torch's rms_norm does the work
        logger.info("RMSNorm keeps torch's rms_norm: the C++ kernel could not be built (%s)", error)
        return None
