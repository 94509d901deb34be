// x @ W.T (+ bias) on the CPU with W kept in ggml quantized blocks (Q4_0, Q4_1, Q8_0).
//
// Layout: row n of `blocks` is output feature n, K / 32 consecutive blocks of 32 weights:
//   Q4_0 (18 bytes): fp16 d, 16 nibble bytes    w = d * (q - 8)
//   Q4_1 (20 bytes): fp16 d, fp16 m, 16 nibbles  w = d * q + m
//   Q8_0 (34 bytes): fp16 d, 32 int8             w = d * q
// Nibble byte j holds weight j in its low half and weight j + 16 in its high half.
//
// Numerics: each weight is bit-identical to blocks.dequantize's (and gguf-py's). d * q is exact in
// float32 (11 significant bits of fp16 times at most 8 of q), so Q4_1's d * q + m rounds once whether
// or not it is fused into an FMA. x * w is accumulated in float32 with FMA, so the result differs from
// x @ dequantize(blocks).T only by summation order.
//
// Speed: a decode step is bound by reading weights, and blocks are 4.5 to 8.5 bits per weight instead
// of 32. Output features are split across threads; each block is decoded once per call and used for
// every row of x (directly from registers for up to 4 rows, else from a decoded copy of the row in L1).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define GGUF_LINEAR_AVX2 1
#endif

namespace {

constexpr int64_t kBlockValues = 32;

#ifdef GGUF_LINEAR_AVX2
inline __m256 broadcast_float16(const uint8_t* bytes) {
  uint16_t bits;
  std::memcpy(&bits, bytes, sizeof(bits));
  return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<short>(bits)));
}

// The 32 4-bit values of 16 bytes as int32, in value order (low nibbles, then high). Widening the
// bytes before splitting them takes 2 shuffles instead of 6.
inline void nibbles_to_int32(const uint8_t* bytes, __m256i* quants) {
  const __m256i first = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes)));
  const __m256i second = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes + 8)));
  const __m256i mask = _mm256_set1_epi32(0x0F);
  quants[0] = _mm256_and_si256(first, mask);
  quants[1] = _mm256_and_si256(second, mask);
  quants[2] = _mm256_srli_epi32(first, 4);
  quants[3] = _mm256_srli_epi32(second, 4);
}

// Each format decodes one block into its 32 float32 weights, held in 4 registers.
struct Q4_0 {
  static constexpr int64_t kBytes = 18;
  static void decode(const uint8_t* block, __m256* weights) {
    __m256i quants[4];
    nibbles_to_int32(block + 2, quants);
    const __m256 d = broadcast_float16(block);
    const __m256i eight = _mm256_set1_epi32(8);
    for (int i = 0; i < 4; ++i) weights[i] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(quants[i], eight)));
  }
};

struct Q4_1 {
  static constexpr int64_t kBytes = 20;
  static void decode(const uint8_t* block, __m256* weights) {
    __m256i quants[4];
    nibbles_to_int32(block + 4, quants);
    const __m256 d = broadcast_float16(block), m = broadcast_float16(block + 2);
    for (int i = 0; i < 4; ++i) weights[i] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(quants[i]), m);
  }
};

struct Q8_0 {
  static constexpr int64_t kBytes = 34;
  static void decode(const uint8_t* block, __m256* weights) {
    const __m256 d = broadcast_float16(block);
    for (int i = 0; i < 4; ++i) {
      const __m128i quants = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + 8 * i));
      weights[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(quants)), d);
    }
  }
};
#else
inline float float16_at(const uint8_t* bytes) {
  uint16_t bits;
  std::memcpy(&bits, bytes, sizeof(bits));
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

// Each format decodes one block into its 32 float32 weights.
struct Q4_0 {
  static constexpr int64_t kBytes = 18;
  static void decode(const uint8_t* block, float* weights) {
    const float d = float16_at(block);
    for (int j = 0; j < 16; ++j) {
      weights[j] = d * static_cast<float>((block[2 + j] & 0x0F) - 8);
      weights[j + 16] = d * static_cast<float>((block[2 + j] >> 4) - 8);
    }
  }
};

struct Q4_1 {
  static constexpr int64_t kBytes = 20;
  static void decode(const uint8_t* block, float* weights) {
    const float d = float16_at(block), m = float16_at(block + 2);
    for (int j = 0; j < 16; ++j) {
      weights[j] = d * static_cast<float>(block[4 + j] & 0x0F) + m;
      weights[j + 16] = d * static_cast<float>(block[4 + j] >> 4) + m;
    }
  }
};

struct Q8_0 {
  static constexpr int64_t kBytes = 34;
  static void decode(const uint8_t* block, float* weights) {
    const float d = float16_at(block);
    const int8_t* quants = reinterpret_cast<const int8_t*>(block + 2);
    for (int j = 0; j < 32; ++j) weights[j] = static_cast<float>(quants[j]) * d;
  }
};
#endif

#ifdef GGUF_LINEAR_AVX2
inline float horizontal_sum(__m256 v) {
  __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  half = _mm_add_ps(half, _mm_movehl_ps(half, half));
  half = _mm_add_ss(half, _mm_movehdup_ps(half));
  return _mm_cvtss_f32(half);
}

constexpr int64_t kTileRows = 4;

// sums[r] = x[r] . w for kRows rows of x (row stride K); load_weights(b, w) puts block b's 32 weights
// in w[0..3]. Each FMA waits ~4 cycles for its accumulator and two can start per cycle, so about 8
// independent accumulators keep the FMA units busy: 4 per row for 1-2 rows, 2 per row for 3-4.
template <int kRows, typename LoadWeights>
inline void dot_tile(const float* x, int64_t K, LoadWeights load_weights, float* sums) {
  constexpr int kChains = kRows <= 2 ? 4 : 2;
  __m256 accumulators[kRows][kChains], weights[4];
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kChains; ++c) accumulators[r][c] = _mm256_setzero_ps();
  }
  for (int64_t block = 0; block < K / kBlockValues; ++block) {
    load_weights(block, weights);
    for (int r = 0; r < kRows; ++r) {
      const float* x_block = x + r * K + block * kBlockValues;
      for (int i = 0; i < 4; ++i) {
        __m256& accumulator = accumulators[r][i % kChains];
        accumulator = _mm256_fmadd_ps(_mm256_loadu_ps(x_block + 8 * i), weights[i], accumulator);
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    __m256 total = accumulators[r][0];
    for (int c = 1; c < kChains; ++c) total = _mm256_add_ps(total, accumulators[r][c]);
    sums[r] = horizontal_sum(total);
  }
}

template <typename LoadWeights>
void dot_all_rows(const float* x, int64_t M, int64_t K, LoadWeights load_weights, float* sums) {
  for (int64_t first = 0; first < M; first += kTileRows) {
    const float* x_tile = x + first * K;
    switch (std::min(kTileRows, M - first)) {
      case 1: dot_tile<1>(x_tile, K, load_weights, sums + first); break;
      case 2: dot_tile<2>(x_tile, K, load_weights, sums + first); break;
      case 3: dot_tile<3>(x_tile, K, load_weights, sums + first); break;
      default: dot_tile<4>(x_tile, K, load_weights, sums + first); break;
    }
  }
}

// sums[m] = x[m] . (weight row `row`); row_buffer holds K floats.
template <typename Format>
void multiply_row(const float* x, const uint8_t* row, int64_t M, int64_t K, float* row_buffer, float* sums) {
  if (M <= kTileRows) {
    dot_all_rows(x, M, K, [&](int64_t block, __m256* w) { Format::decode(row + block * Format::kBytes, w); }, sums);
    return;
  }
  __m256 weights[4];
  for (int64_t block = 0; block < K / kBlockValues; ++block) {
    Format::decode(row + block * Format::kBytes, weights);
    for (int i = 0; i < 4; ++i) _mm256_storeu_ps(row_buffer + block * kBlockValues + 8 * i, weights[i]);
  }
  dot_all_rows(x, M, K, [&](int64_t block, __m256* w) {
    for (int i = 0; i < 4; ++i) w[i] = _mm256_loadu_ps(row_buffer + block * kBlockValues + 8 * i);
  }, sums);
}
#else
template <typename Format>
void multiply_row(const float* x, const uint8_t* row, int64_t M, int64_t K, float* row_buffer, float* sums) {
  for (int64_t block = 0; block < K / kBlockValues; ++block) {
    Format::decode(row + block * Format::kBytes, row_buffer + block * kBlockValues);
  }
  for (int64_t m = 0; m < M; ++m) {
    float sum = 0.f;
    for (int64_t k = 0; k < K; ++k) sum += x[m * K + k] * row_buffer[k];
    sums[m] = sum;
  }
}
#endif

template <typename Format>
void gguf_linear_kernel(const torch::Tensor& x, const torch::Tensor& blocks, const float* bias, torch::Tensor& out) {
  const int64_t M = x.size(0), K = x.size(1), N = blocks.size(0);
  const float* x_data = x.data_ptr<float>();
  const uint8_t* block_data = blocks.data_ptr<uint8_t>();
  float* out_data = out.data_ptr<float>();
  const int64_t row_bytes = blocks.size(1);

  // Chunks of at least 16 output features: enough work per task that both cores of a small machine
  // share even a 64-feature projection.
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> row_buffer(K), sums(M);
    for (int64_t n = begin; n < end; ++n) {
      multiply_row<Format>(x_data, block_data + n * row_bytes, M, K, row_buffer.data(), sums.data());
      const float offset = bias ? bias[n] : 0.f;
      for (int64_t m = 0; m < M; ++m) out_data[m * N + n] = sums[m] + offset;
    }
  });
}

int64_t bytes_per_block(int64_t quant_type) {
  TORCH_CHECK(quant_type == 2 || quant_type == 3 || quant_type == 8, "unsupported ggml quant type ", quant_type,
              "; supported: 2 (Q4_0), 3 (Q4_1), 8 (Q8_0)");
  return quant_type == 2 ? Q4_0::kBytes : quant_type == 3 ? Q4_1::kBytes : Q8_0::kBytes;
}

}  // namespace

// x: float32 [M, K], blocks: uint8 [N, (K / 32) * bytes_per_block], bias: float32 [N] -> float32 [M, N].
torch::Tensor gguf_linear(torch::Tensor x, torch::Tensor blocks, int64_t quant_type, std::optional<torch::Tensor> bias) {
  const int64_t block_bytes = bytes_per_block(quant_type);
  TORCH_CHECK(x.device().is_cpu() && blocks.device().is_cpu(), "x and blocks must be CPU tensors");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "x must be float32, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "x must be a contiguous 2-D tensor [M, K], got shape ", x.sizes());
  TORCH_CHECK(x.size(1) % kBlockValues == 0, "K (x.size(1) = ", x.size(1), ") must be a multiple of 32");
  TORCH_CHECK(blocks.scalar_type() == at::kByte, "blocks must be uint8, got ", blocks.scalar_type());
  TORCH_CHECK(blocks.dim() == 2 && blocks.is_contiguous(), "blocks must be a contiguous 2-D tensor, got shape ",
              blocks.sizes());
  const int64_t row_bytes = x.size(1) / kBlockValues * block_bytes;
  TORCH_CHECK(blocks.size(1) == row_bytes, "blocks rows must be ", row_bytes, " bytes for K = ", x.size(1),
              " (", x.size(1) / kBlockValues, " blocks of ", block_bytes, "), got ", blocks.size(1));
  const float* bias_data = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->device().is_cpu() && bias->scalar_type() == at::kFloat && bias->is_contiguous(),
                "bias must be a contiguous float32 CPU tensor");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == blocks.size(0), "bias must have shape [N] = [", blocks.size(0),
                "], got ", bias->sizes());
    bias_data = bias->data_ptr<float>();
  }

  torch::Tensor out = torch::empty({x.size(0), blocks.size(0)}, x.options());
  switch (quant_type) {
    case 2: gguf_linear_kernel<Q4_0>(x, blocks, bias_data, out); break;
    case 3: gguf_linear_kernel<Q4_1>(x, blocks, bias_data, out); break;
    default: gguf_linear_kernel<Q8_0>(x, blocks, bias_data, out); break;
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("gguf_linear", &gguf_linear, "x @ W.T (+ bias) with W in ggml Q4_0 / Q4_1 / Q8_0 blocks (CPU)",
             pybind11::arg("x"), pybind11::arg("blocks"), pybind11::arg("quant_type"), pybind11::arg("bias") = pybind11::none());
}
