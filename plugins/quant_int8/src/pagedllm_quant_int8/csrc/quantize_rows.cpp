// Per-token int8 quantization of a W8A8 layer's input in one pass per row.
//
// Each row of x gets the scale amax / 127 and becomes round-half-even(x / scale) + 128 as unsigned
// bytes (oneDNN's activation type, zero point 128). Written in C++ because the same steps as torch
// ops (abs, amax, divide, round, shift, two casts) are a dozen thread-pool launches per layer, which
// cost more than the int8 matmul itself at decode sizes on a busy 2-core machine.

#include <torch/extension.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

// The scalar steps for one element: x / scale rounded half to even (the torch reference's
// arithmetic), clamped, then shifted.
inline uint8_t quantize_one(float x, float scale) {
  const float q = std::nearbyint(x / scale);
  return static_cast<uint8_t>(static_cast<int32_t>(std::min(std::max(q, -127.f), 127.f)) + 128);
}

template <typename scalar_t>
void quantize_row(const scalar_t* in, int64_t k, uint8_t* out, float* scale_out) {
  float amax = 0.f;
  for (int64_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(static_cast<float>(in[i])));
  const float scale = std::max(amax, 1e-10f) / 127.f;
  *scale_out = scale;
  for (int64_t i = 0; i < k; ++i) out[i] = quantize_one(static_cast<float>(in[i]), scale);
}

#if defined(__AVX2__)
// float32 rows eight at a time. The division and the rounding instruction (nearest, ties to even)
// give the scalar path's bits exactly; only the amax's evaluation order differs, which max ignores.
// Without it (libm's nearbyint per element, no vector max) the quantizer took as long as the
// int8 product it feeds at prefill sizes.
template <>
void quantize_row<float>(const float* in, int64_t k, uint8_t* out, float* scale_out) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) vmax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(in + i), abs_mask), vmax);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float amax = 0.f;
  for (float lane : lanes) amax = std::max(amax, lane);
  for (; i < k; ++i) amax = std::max(amax, std::fabs(in[i]));
  const float scale = std::max(amax, 1e-10f) / 127.f;
  *scale_out = scale;

  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256 lo = _mm256_set1_ps(-127.f), hi = _mm256_set1_ps(127.f), shift = _mm256_set1_ps(128.f);
  for (i = 0; i + 8 <= k; i += 8) {
    __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(in + i), vscale),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm256_add_ps(_mm256_min_ps(_mm256_max_ps(q, lo), hi), shift);
    const __m256i words = _mm256_cvtps_epi32(q);  // 1..255, exact
    const __m128i halves = _mm_packus_epi32(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi16(halves, halves));
  }
  for (; i < k; ++i) out[i] = quantize_one(in[i], scale);
}
#endif

template <typename scalar_t>
void quantize_rows_kernel(const torch::Tensor& x, torch::Tensor& quantized, torch::Tensor& scales) {
  const int64_t m = x.size(0), k = x.size(1);
  const scalar_t* x_data = x.data_ptr<scalar_t>();
  uint8_t* q_data = quantized.data_ptr<uint8_t>();
  float* scale_data = scales.data_ptr<float>();
  // Rows are independent; small steps (decode) stay on the calling thread.
  at::parallel_for(0, m, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) quantize_row(x_data + row * k, k, q_data + row * k, scale_data + row);
  });
}

// Each shifted row u of the first `count` bytes becomes u >> 1 in place and u - (u >> 1) `count` bytes on
// (int8_linear's split rows).
void split_rows(uint8_t* shifted, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t high = shifted[i] >> 1;
    shifted[count + i] = shifted[i] - high;
    shifted[i] = high;
  }
}

// The rows quantized and shifted, [m, k], or split into [2m, k] (int8_linear), and their scales [m, 1].
std::tuple<torch::Tensor, torch::Tensor> quantize_rows(torch::Tensor x, bool split) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "x must be a contiguous [m, k] matrix");
  auto quantized = torch::empty({split ? 2 * x.size(0) : x.size(0), x.size(1)}, x.options().dtype(at::kByte));
  auto scales = torch::empty({x.size(0), 1}, x.options().dtype(at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "quantize_rows", [&] {
    quantize_rows_kernel<scalar_t>(x, quantized, scales);
  });
  if (split) split_rows(quantized.data_ptr<uint8_t>(), x.numel());
  return {quantized, scales};
}

// oneDNN's int8 product: unsigned rows with a zero point times the packed int8 W, float32 out.
torch::Tensor onednn_product(const torch::Tensor& rows, int64_t zero_point, const torch::Tensor& packed_weight,
                             const torch::Tensor& weight_scale, const torch::Tensor& weight_zero_points) {
  static const c10::OperatorHandle qlinear =
      c10::Dispatcher::singleton().findSchemaOrThrow("onednn::qlinear_pointwise", "");
  torch::jit::Stack stack{rows, 1.0, zero_point, packed_weight, weight_scale, weight_zero_points,
                          c10::IValue(), 1.0, int64_t{0}, static_cast<int64_t>(at::kFloat), std::string("none"),
                          c10::List<std::optional<at::Scalar>>(), std::string("")};
  qlinear.callBoxed(stack);
  return std::move(stack.front()).toTensor();
}

// Whether oneDNN sums pairs of u8 x s8 products in int16 with saturation, as its kernels for CPUs
// without VNNI do (vpmaddubsw): 255 * 127 twice overflows int16. Measured on rows of 255 times weights
// of 127 at step sizes that take different kernels, rather than read from the CPU's flags, since
// ONEDNN_MAX_CPU_ISA can hold oneDNN below what the CPU has.
bool product_saturates() {
  static const c10::OperatorHandle prepack = c10::Dispatcher::singleton().findSchemaOrThrow("onednn::qlinear_prepack", "");
  constexpr int64_t kFeatures = 16, kDepth = 256;
  torch::jit::Stack stack{torch::full({kFeatures, kDepth}, 127, torch::kChar), c10::IValue()};
  prepack.callBoxed(stack);
  const torch::Tensor packed = std::move(stack.front()).toTensor();
  for (int64_t num_rows : {1, 16, 128}) {
    const torch::Tensor product = onednn_product(torch::full({num_rows, kDepth}, 255, torch::kByte), 0, packed,
                                                 torch::ones({kFeatures}), torch::zeros({kFeatures}, torch::kLong));
    if (!product.eq(255.0 * 127.0 * kDepth).all().item<bool>()) return true;
  }
  return false;
}

}  // namespace

// rows [m, k] @ (W * weight_scale).T + bias with rows quantized per token on the way (kernel.int8_linear):
// oneDNN's int8 product of the shifted rows (zero point 128) and the packed W, times each row's scale.
// Where the product saturates (above), each shifted row u = q + 128 goes in as two rows, u >> 1 and
// u - (u >> 1), both with zero point 64: their values sum to q, are at most 128, and pairs of them times
// weights in [-128, 127] stay inside int16, so the two products add up to the exact one.
torch::Tensor int8_linear(torch::Tensor rows, torch::Tensor packed_weight, torch::Tensor weight_scale,
                          torch::Tensor weight_zero_points, std::optional<torch::Tensor> bias) {
  static const bool split = product_saturates();
  auto [shifted, scales] = quantize_rows(rows.contiguous(), split);
  torch::Tensor output;
  if (split) {
    const int64_t num_rows = rows.size(0);
    const torch::Tensor halves = onednn_product(shifted, 64, packed_weight, weight_scale, weight_zero_points);
    output = halves.narrow(0, 0, num_rows).add_(halves.narrow(0, num_rows, num_rows));
  } else {
    output = onednn_product(shifted, 128, packed_weight, weight_scale, weight_zero_points);
  }
  output.mul_(scales);
  if (bias.has_value()) output.add_(*bias);
  return output.to(rows.scalar_type());
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("quantize_rows", &quantize_rows, "per-token int8 quantization, shifted to uint8 (+128), and scales",
             pybind11::arg("x"), pybind11::arg("split") = false);
  module.def("int8_linear", &int8_linear, "W8A8 rows @ (W * weight_scale).T + bias with per-token int8 rows");
  module.def("product_saturates", &product_saturates, "whether oneDNN's u8 x s8 product saturates in int16 here");
}

// The layer's product as a torch operator, TORCH_EXTENSION_NAME::linear, for the decoder program.
TORCH_LIBRARY(TORCH_EXTENSION_NAME, library) {
  library.def("linear(Tensor rows, Tensor packed_weight, Tensor weight_scale, Tensor weight_zero_points, "
              "Tensor? bias) -> Tensor",
              &int8_linear);
}
