// Per-token int8 quantization of a W8A8 layer's input in one pass per row.
//
// Each row of x gets the scale amax / 127 and becomes round-half-even(x / scale) + 128 as unsigned
// bytes (oneDNN's activation type, zero point 128). Written in C++ because the same steps as torch
// ops (abs, amax, divide, round, shift, two casts) are a dozen thread-pool launches per layer, which
// cost more than the int8 matmul itself at decode sizes on a busy 2-core machine.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <tuple>

namespace {

template <typename scalar_t>
void quantize_rows_kernel(const torch::Tensor& x, torch::Tensor& quantized, torch::Tensor& scales) {
  const int64_t m = x.size(0), k = x.size(1);
  const scalar_t* x_data = x.data_ptr<scalar_t>();
  uint8_t* q_data = quantized.data_ptr<uint8_t>();
  float* scale_data = scales.data_ptr<float>();
  // Rows are independent; small steps (decode) stay on the calling thread.
  at::parallel_for(0, m, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const scalar_t* in = x_data + row * k;
      float amax = 0.f;
      for (int64_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(static_cast<float>(in[i])));
      const float scale = std::max(amax, 1e-10f) / 127.f;
      scale_data[row] = scale;
      uint8_t* out = q_data + row * k;
      for (int64_t i = 0; i < k; ++i) {
        // Same arithmetic as the torch reference: x / scale, rounded half to even, then the shift.
        const float q = std::nearbyint(static_cast<float>(in[i]) / scale);
        out[i] = static_cast<uint8_t>(static_cast<int32_t>(std::min(std::max(q, -127.f), 127.f)) + 128);
      }
    }
  });
}

}  // namespace

std::tuple<torch::Tensor, torch::Tensor> quantize_rows(torch::Tensor x) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "x must be a contiguous [m, k] matrix");
  auto quantized = torch::empty({x.size(0), x.size(1)}, x.options().dtype(at::kByte));
  auto scales = torch::empty({x.size(0), 1}, x.options().dtype(at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "quantize_rows", [&] {
    quantize_rows_kernel<scalar_t>(x, quantized, scales);
  });
  return {quantized, scales};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("quantize_rows", &quantize_rows, "per-token int8 quantization, shifted to uint8 (+128), and scales");
}
