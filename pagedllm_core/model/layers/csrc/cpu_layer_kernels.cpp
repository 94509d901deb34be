// Small float32 CPU kernels of the decoder layers: RMSNorm, residual add + RMSNorm, silu(gate) * up, the
// rotary embedding.
// Each replaces a handful of torch ops whose dispatch, not arithmetic, is their cost on a decode step.
#include "cpu_layer_kernels.h"

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#if defined(__AVX2__)
#include <immintrin.h>
#include <sleef.h>
#endif

namespace {

void check_float32_cpu(const torch::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.scalar_type() == torch::kFloat32, name, " must be float32");
  TORCH_CHECK(tensor.device().is_cpu(), name, " must be a CPU tensor");
}

// out = row * (1 / sqrt(sum(row^2) / hidden + eps)) * weight. Never inlined: rms_norm and
// fused_add_rms_norm then run the very same machine code, so the compiler cannot order the sum of
// squares differently in one of them and the fused kernel stays bit-identical to add-then-norm.
__attribute__((noinline)) void rms_norm_row(const float* row, const float* weight, float* out, int64_t hidden,
                                            float eps) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < hidden; ++j) sum += row[j] * row[j];
  const float scale = 1.f / std::sqrt(sum / static_cast<float>(hidden) + eps);
#pragma omp simd
  for (int64_t j = 0; j < hidden; ++j) out[j] = row[j] * scale * weight[j];
}

int64_t checked_num_rows(const torch::Tensor& x, const torch::Tensor& weight) {
  const int64_t hidden = x.size(-1);
  TORCH_CHECK(weight.numel() == hidden, "weight has ", weight.numel(), " values for rows of ", hidden);
  return hidden ? x.numel() / hidden : 0;
}

}  // namespace

// RMSNorm of each row of x (float32).
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  check_float32_cpu(x, "x");
  check_float32_cpu(weight, "weight");
  const int64_t rows = checked_num_rows(x, weight);
  const int64_t hidden = x.size(-1);
  const torch::Tensor input = x.contiguous();
  const torch::Tensor scale_by = weight.contiguous();
  torch::Tensor out = torch::empty_like(input);
  const float* in = input.data_ptr<float>();
  const float* w = scale_by.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) rms_norm_row(in + r * hidden, w, o + r * hidden, hidden, static_cast<float>(eps));
  });
  return out;
}

// residual += x (in place), then returns RMSNorm(residual): the residual add of a pre-norm block
// folded into the next block's norm.
torch::Tensor fused_add_rms_norm(const torch::Tensor& x, torch::Tensor& residual, const torch::Tensor& weight,
                                 double eps) {
  check_float32_cpu(x, "x");
  check_float32_cpu(residual, "residual");
  check_float32_cpu(weight, "weight");
  TORCH_CHECK(x.sizes() == residual.sizes(), "x ", x.sizes(), " and residual ", residual.sizes(), " differ in shape");
  TORCH_CHECK(residual.is_contiguous(), "residual must be contiguous (it is updated in place)");
  const int64_t rows = checked_num_rows(x, weight);
  const int64_t hidden = x.size(-1);
  const torch::Tensor input = x.contiguous();
  const torch::Tensor scale_by = weight.contiguous();
  torch::Tensor out = torch::empty_like(residual);
  const float* in = input.data_ptr<float>();
  const float* w = scale_by.data_ptr<float>();
  float* res = residual.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* res_row = res + r * hidden;
      const float* in_row = in + r * hidden;
#pragma omp simd
      for (int64_t j = 0; j < hidden; ++j) res_row[j] = res_row[j] + in_row[j];
      rms_norm_row(res_row, w, o + r * hidden, hidden, static_cast<float>(eps));
    }
  });
  return out;
}

namespace {

inline float silu_times(float gate, float up) { return gate / (1.f + std::exp(-gate)) * up; }

// silu(gate) * up over one row. torch's silu computes gate / (1 + exp(-gate)) with SLEEF's expf
// (1-ulp) on its vectorised stretch of a row and libm's expf on the scalar tail; doing the same on
// the same stretches (the first `vectorized` values, given by the caller from torch's CPU
// capability) makes the result bit-identical to F.silu(gate) * up.
void silu_and_mul_row(const float* gate, const float* up, float* out, int64_t size, int64_t vectorized) {
  int64_t j = 0;
#if defined(__AVX2__)
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 sign = _mm256_set1_ps(-0.f);
  for (; j + 8 <= vectorized; j += 8) {
    const __m256 g = _mm256_loadu_ps(gate + j);
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, Sleef_expf8_u10(_mm256_xor_ps(g, sign))));
    _mm256_storeu_ps(out + j, _mm256_mul_ps(silu, _mm256_loadu_ps(up + j)));
  }
#endif
  for (; j < size; ++j) out[j] = silu_times(gate[j], up[j]);
}

}  // namespace

// x: [..., 2 * d] holding gate then up -> silu(gate) * up: [..., d]. In each row the first
// (d / vector_block) * vector_block values take the vectorised formula (vector_block 0: none do).
torch::Tensor silu_and_mul(const torch::Tensor& x, int64_t vector_block) {
  check_float32_cpu(x, "x");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) % 2 == 0, "the last dimension (gate then up) must be even, got ", x.sizes());
  const torch::Tensor input = x.contiguous();
  const int64_t size = input.size(-1) / 2;
  std::vector<int64_t> out_shape = input.sizes().vec();
  out_shape.back() = size;
  torch::Tensor out = torch::empty(out_shape, input.options());
  const int64_t rows = size ? out.numel() / size : 0;
  const int64_t vectorized = vector_block > 0 ? size / vector_block * vector_block : 0;
  const float* in = input.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* gate = in + r * 2 * size;
      silu_and_mul_row(gate, gate + size, o + r * size, size, vectorized);
    }
  });
  return out;
}

// heads: [tokens, num_heads * head_size] (rows may be strided: q and k side by side in a fused projection's
// output), cos = [c, c] and sin = [-s, s]: [tokens, 1, head_size] -> the rotated heads, contiguous. Each value
// is x * cos + partner * sin with the partner (the other half's value at the same place) as torch's
// heads.roll(head_size / 2) gives it, both products rounded before the add, as RotaryEmbedding's torch ops
// round them: the results are bit-identical to theirs. (Not contracted into an FMA: the attribute keeps it
// so whatever the compiler's default.)
__attribute__((optimize("fp-contract=off"))) torch::Tensor rotate_heads(const torch::Tensor& heads,
                                                                         const torch::Tensor& cos,
                                                                         const torch::Tensor& sin) {
  check_float32_cpu(heads, "heads");
  check_float32_cpu(cos, "cos");
  check_float32_cpu(sin, "sin");
  TORCH_CHECK(heads.dim() == 2 && heads.stride(1) == 1, "heads must be [tokens, heads * head_size] with contiguous rows");
  const int64_t tokens = heads.size(0), head_size = cos.size(-1), half = head_size / 2;
  TORCH_CHECK(head_size % 2 == 0 && heads.size(1) % head_size == 0, "rows of ", heads.size(1),
              " values are not whole heads of an even size ", head_size);
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.numel() == tokens * head_size &&
                  sin.numel() == tokens * head_size,
              "cos and sin must be contiguous [tokens, 1, head_size]");
  torch::Tensor out = torch::empty({tokens, heads.size(1)}, heads.options());
  const int64_t num_heads = heads.size(1) / head_size, row_stride = heads.stride(0);
  const float* in = heads.data_ptr<float>();
  const float* cos_data = cos.data_ptr<float>();
  const float* sin_data = sin.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t token = 0; token < tokens; ++token) {
    const float* c = cos_data + token * head_size;
    const float* s = sin_data + token * head_size;
    for (int64_t head = 0; head < num_heads; ++head) {
      const float* x = in + token * row_stride + head * head_size;
      float* y = o + (token * num_heads + head) * head_size;
#pragma omp simd
      for (int64_t j = 0; j < half; ++j) {
        const float rotated = x[j] * c[j], partner = x[j + half] * s[j];
        y[j] = rotated + partner;
      }
#pragma omp simd
      for (int64_t j = half; j < head_size; ++j) {
        const float rotated = x[j] * c[j], partner = x[j - half] * s[j];
        y[j] = rotated + partner;
      }
    }
  }
  return out;
}
