// Small CPU kernels of the decoder layers: RMSNorm, residual add + RMSNorm, silu(gate) * up, the rotary
// embedding, over float32, bfloat16 or float16 rows.
// Each replaces a handful of torch ops whose dispatch, not arithmetic, is their cost on a decode step.
//
// Half-precision rows are widened to float32 for the arithmetic and rounded back (to nearest even) at every
// point where torch's ops on that dtype round: after each op of the layers' torch code. So a bfloat16 or
// float16 layer gets what its torch ops would give, and the float32 code is the same template with the
// roundings compiled away.
#include "cpu_layer_kernels.h"

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cmath>
#include <cstring>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#include <sleef.h>
#endif

// Runs the lambda after NAME with scalar_t the rows' type: float32, bfloat16 or float16. (No pragmas in the
// lambda: a directive cannot sit in a macro's arguments.)
#define DISPATCH_ROW_TYPES(TYPE, NAME, ...)                           \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                         AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__) AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__))

namespace {

inline float widen(float value) { return value; }
inline float widen(c10::BFloat16 value) { return static_cast<float>(value); }
inline float widen(c10::Half value) { return static_cast<float>(value); }

// `value` rounded to scalar_t (to nearest even). bfloat16 takes the bits of c10::BFloat16's constructor (NaN
// becomes its quiet NaN) without its branch, so that loops over rows vectorise.
template <typename scalar_t>
inline scalar_t narrow(float value) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof(bits));
    const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    return c10::BFloat16(static_cast<uint16_t>(value != value ? 0x7FC0u : rounded), c10::BFloat16::from_bits());
  } else {
    return scalar_t(value);
  }
}

// `value` rounded to scalar_t, as float32 again: what a torch op on scalar_t rows stores and the next op reads.
template <typename scalar_t>
inline float rounded(float value) {
  return widen(narrow<scalar_t>(value));
}

void check_cpu_rows(const torch::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.device().is_cpu(), name, " must be a CPU tensor");
}

void check_same_dtype(const torch::Tensor& tensor, const torch::Tensor& like, const char* name) {
  check_cpu_rows(tensor, name);
  TORCH_CHECK(tensor.scalar_type() == like.scalar_type(), name, " is ", tensor.scalar_type(), ", the rows ",
              like.scalar_type());
}

// out = row * (1 / sqrt(sum(row^2) / hidden + eps)) * weight, rounded after the scaling and after the weight
// as the layers' torch code rounds (`weight * rms_norm(row.float()).to(dtype)`). Never inlined: rms_norm and
// fused_add_rms_norm then run the very same machine code, so the compiler cannot order the sum of squares
// differently in one of them and the fused kernel stays bit-identical to add-then-norm.
template <typename scalar_t>
__attribute__((noinline)) void rms_norm_row(const scalar_t* row, const scalar_t* weight, scalar_t* out,
                                            int64_t hidden, float eps) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < hidden; ++j) sum += widen(row[j]) * widen(row[j]);
  const float scale = 1.f / std::sqrt(sum / static_cast<float>(hidden) + eps);
#pragma omp simd
  for (int64_t j = 0; j < hidden; ++j) {
    out[j] = narrow<scalar_t>(rounded<scalar_t>(widen(row[j]) * scale) * widen(weight[j]));
  }
}

// sum += addend, rounded to scalar_t.
template <typename scalar_t>
void add_into(scalar_t* sum, const scalar_t* addend, int64_t size) {
#pragma omp simd
  for (int64_t j = 0; j < size; ++j) sum[j] = narrow<scalar_t>(widen(sum[j]) + widen(addend[j]));
}

int64_t checked_num_rows(const torch::Tensor& x, const torch::Tensor& weight) {
  const int64_t hidden = x.size(-1);
  TORCH_CHECK(weight.numel() == hidden, "weight has ", weight.numel(), " values for rows of ", hidden);
  return hidden ? x.numel() / hidden : 0;
}

}  // namespace

// RMSNorm of each row of x.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  check_cpu_rows(x, "x");
  check_same_dtype(weight, x, "weight");
  const int64_t rows = checked_num_rows(x, weight);
  const int64_t hidden = x.size(-1);
  const torch::Tensor input = x.contiguous();
  const torch::Tensor scale_by = weight.contiguous();
  torch::Tensor out = torch::empty_like(input);
  DISPATCH_ROW_TYPES(x.scalar_type(), "rms_norm", [&] {
    const scalar_t* in = input.data_ptr<scalar_t>();
    const scalar_t* w = scale_by.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        rms_norm_row(in + r * hidden, w, o + r * hidden, hidden, static_cast<float>(eps));
      }
    });
  });
  return out;
}

// residual += x (in place, rounded to the rows' dtype), then returns RMSNorm(residual): the residual add of a
// pre-norm block folded into the next block's norm.
torch::Tensor fused_add_rms_norm(const torch::Tensor& x, torch::Tensor& residual, const torch::Tensor& weight,
                                 double eps) {
  check_cpu_rows(x, "x");
  check_same_dtype(residual, x, "residual");
  check_same_dtype(weight, x, "weight");
  TORCH_CHECK(x.sizes() == residual.sizes(), "x ", x.sizes(), " and residual ", residual.sizes(), " differ in shape");
  TORCH_CHECK(residual.is_contiguous(), "residual must be contiguous (it is updated in place)");
  const int64_t rows = checked_num_rows(x, weight);
  const int64_t hidden = x.size(-1);
  const torch::Tensor input = x.contiguous();
  const torch::Tensor scale_by = weight.contiguous();
  torch::Tensor out = torch::empty_like(residual);
  DISPATCH_ROW_TYPES(x.scalar_type(), "fused_add_rms_norm", [&] {
    const scalar_t* in = input.data_ptr<scalar_t>();
    const scalar_t* w = scale_by.data_ptr<scalar_t>();
    scalar_t* res = residual.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        add_into(res + r * hidden, in + r * hidden, hidden);
        rms_norm_row(res + r * hidden, w, o + r * hidden, hidden, static_cast<float>(eps));
      }
    });
  });
  return out;
}

namespace {

inline float silu(float gate) { return gate / (1.f + std::exp(-gate)); }

#if defined(__AVX2__)
inline __m256 load_floats(const float* values) { return _mm256_loadu_ps(values); }
inline __m256 load_floats(const c10::BFloat16* values) {
  // A bfloat16 is the top half of a float32.
  const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(values));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
}
inline __m256 load_floats(const c10::Half* values) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(values)));
}
#endif

// silu(gate) * up over one row; silu's result is rounded to scalar_t before the product, as F.silu(gate) * up
// rounds it. torch's silu computes gate / (1 + exp(-gate)) with SLEEF's expf (1-ulp) on its vectorised
// stretch of a row and libm's expf on the scalar tail; doing the same on the same stretches (the first
// `vectorized` values, given by the caller from torch's CPU capability) makes the result bit-identical to
// F.silu(gate) * up. `silus` holds the row's silu values in float32 on the way.
template <typename scalar_t>
void silu_and_mul_row(const scalar_t* gate, const scalar_t* up, scalar_t* out, int64_t size, int64_t vectorized,
                      float* silus) {
  int64_t j = 0;
#if defined(__AVX2__)
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 sign = _mm256_set1_ps(-0.f);
  for (; j + 8 <= vectorized; j += 8) {
    const __m256 g = load_floats(gate + j);
    _mm256_storeu_ps(silus + j, _mm256_div_ps(g, _mm256_add_ps(one, Sleef_expf8_u10(_mm256_xor_ps(g, sign)))));
  }
#endif
  for (; j < size; ++j) silus[j] = silu(widen(gate[j]));
#pragma omp simd
  for (j = 0; j < size; ++j) out[j] = narrow<scalar_t>(rounded<scalar_t>(silus[j]) * widen(up[j]));
}

}  // namespace

// x: [..., 2 * d] holding gate then up -> silu(gate) * up: [..., d]. In each row the first
// (d / vector_block) * vector_block values take the vectorised formula (vector_block 0: none do).
torch::Tensor silu_and_mul(const torch::Tensor& x, int64_t vector_block) {
  check_cpu_rows(x, "x");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) % 2 == 0, "the last dimension (gate then up) must be even, got ", x.sizes());
  const torch::Tensor input = x.contiguous();
  const int64_t size = input.size(-1) / 2;
  std::vector<int64_t> out_shape = input.sizes().vec();
  out_shape.back() = size;
  torch::Tensor out = torch::empty(out_shape, input.options());
  const int64_t rows = size ? out.numel() / size : 0;
  const int64_t vectorized = vector_block > 0 ? size / vector_block * vector_block : 0;
  DISPATCH_ROW_TYPES(x.scalar_type(), "silu_and_mul", [&] {
    const scalar_t* in = input.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> silus(size);
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* gate = in + r * 2 * size;
        silu_and_mul_row(gate, gate + size, o + r * size, size, vectorized, silus.data());
      }
    });
  });
  return out;
}

namespace {

// x * cos + partner * sin, each product rounded to scalar_t before the add and the sum after it, as
// RotaryEmbedding's torch ops round them. Not contracted into an FMA: the attribute keeps it so whatever the
// compiler's default, in rotate_rows too, which it is inlined into.
template <typename scalar_t>
__attribute__((optimize("fp-contract=off"))) inline scalar_t rotated_value(scalar_t x, scalar_t partner, scalar_t cos,
                                                                          scalar_t sin) {
  return narrow<scalar_t>(rounded<scalar_t>(widen(x) * widen(cos)) + rounded<scalar_t>(widen(partner) * widen(sin)));
}

// Every head of the rows of tokens first_token .. end_token; the partner of a value is the other half's value
// at the same place.
template <typename scalar_t>
__attribute__((optimize("fp-contract=off"))) void rotate_rows(const scalar_t* in, const scalar_t* cos_data,
                                                              const scalar_t* sin_data, scalar_t* out,
                                                              int64_t first_token, int64_t end_token,
                                                              int64_t num_heads, int64_t head_size,
                                                              int64_t row_stride) {
  const int64_t half = head_size / 2;
  for (int64_t token = first_token; token < end_token; ++token) {
    const scalar_t* c = cos_data + token * head_size;
    const scalar_t* s = sin_data + token * head_size;
    for (int64_t head = 0; head < num_heads; ++head) {
      const scalar_t* x = in + token * row_stride + head * head_size;
      scalar_t* y = out + (token * num_heads + head) * head_size;
#pragma omp simd
      for (int64_t j = 0; j < half; ++j) y[j] = rotated_value(x[j], x[j + half], c[j], s[j]);
#pragma omp simd
      for (int64_t j = half; j < head_size; ++j) y[j] = rotated_value(x[j], x[j - half], c[j], s[j]);
    }
  }
}

}  // namespace

// heads: [tokens, num_heads * head_size] (rows may be strided: q and k side by side in a fused projection's
// output), cos = [c, c] and sin = [-s, s]: [tokens, 1, head_size] -> the rotated heads, contiguous. Each value
// is x * cos + partner * sin with the partner (the other half's value at the same place) as torch's
// heads.roll(head_size / 2) gives it (rotated_value): the results are bit-identical to RotaryEmbedding's
// torch ops. cos and sin are in the heads' dtype.
torch::Tensor rotate_heads(const torch::Tensor& heads, const torch::Tensor& cos, const torch::Tensor& sin) {
  check_cpu_rows(heads, "heads");
  check_same_dtype(cos, heads, "cos");
  check_same_dtype(sin, heads, "sin");
  TORCH_CHECK(heads.dim() == 2 && heads.stride(1) == 1, "heads must be [tokens, heads * head_size] with contiguous rows");
  const int64_t tokens = heads.size(0), head_size = cos.size(-1);
  TORCH_CHECK(head_size % 2 == 0 && heads.size(1) % head_size == 0, "rows of ", heads.size(1),
              " values are not whole heads of an even size ", head_size);
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.numel() == tokens * head_size &&
                  sin.numel() == tokens * head_size,
              "cos and sin must be contiguous [tokens, 1, head_size]");
  torch::Tensor out = torch::empty({tokens, heads.size(1)}, heads.options());
  const int64_t num_heads = heads.size(1) / head_size, row_stride = heads.stride(0);
  DISPATCH_ROW_TYPES(heads.scalar_type(), "rotate_heads", [&] {
    const scalar_t* in = heads.data_ptr<scalar_t>();
    const scalar_t* cos_data = cos.data_ptr<scalar_t>();
    const scalar_t* sin_data = sin.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, tokens, 16, [&](int64_t begin, int64_t end) {
      rotate_rows(in, cos_data, sin_data, o, begin, end, num_heads, head_size, row_stride);
    });
  });
  return out;
}
