// x @ W (+ bias) on the CPU with W kept as AWQ's 4-bit weights: W[k, n] = (q[k, n] - z[k / G, n]) * s[k / G, n],
// q and z 4-bit, s float16, G the group size.
//
// Checkpoint layout (AutoAWQ's GEMM version): qweight int32 [K, N / 8] and qzeros int32 [K / G, N / 8]; nibble i
// (bits 4i..4i+3) of word j holds column 8j + order[i], order = (0, 2, 4, 6, 1, 3, 5, 7); scales fp16 [K / G, N].
//
// Kernel layout (awq_repack makes it once at load time, 4-bit to 4-bit): columns in blocks of 64, each block 8
// words per row; nibble i of word t of block b holds column 64b + 8i + t. Shifting 8 consecutive words right by
// 4i and masking gives 8 *consecutive* columns, so the accumulators, scales and zeros line up with no shuffles.
// The tensors are block-major: qweight [blocks, K, 8], qzeros [blocks, K / G, 8], scales [blocks, K / G, 64],
// so a thread reads each block of columns as one contiguous run (K-major rows of N / 2 bytes made every 32-byte
// read a new page, and ran at a third of the memory bandwidth). N is padded to a multiple of 64 with zero
// weights, zeros and scales.
//
// Numerics: per group, sum_k x[k] * (q - z) * s is computed as s * (sum_k x[k] * q) - s * z * (sum_k x[k]):
// one FMA per weight, exact integer q, float32 accumulation. The result differs from x @ dequantized(W) by
// float32 rounding in that order of summation (tests: tests/test_awq_kernel.py states the tolerance).
//
// Speed: a decode step (few rows) is bound by reading weights; these are 4 bits plus 32 bits of scale and zero per
// group, against float32's 32. Blocks of 64 columns are split across threads. Steps with more than
// kMaxFusedRows rows dequantize one tile of columns at a time into float32 and multiply it with BLAS.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define AWQ_LINEAR_AVX2 1
#endif

namespace {

constexpr int64_t kBlockColumns = 64, kBlockWords = 8;
constexpr int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};  // checkpoint nibble i holds column 8j + kOrder[i]
constexpr int64_t kMaxFusedRows = 16;
constexpr int64_t kTileBytes = 1 << 19;  // the float32 tile a many-row step dequantizes at a time

inline int64_t num_blocks(int64_t N) { return (N + kBlockColumns - 1) / kBlockColumns; }

inline float half_to_float(at::Half h) { return static_cast<float>(h); }

// The 4-bit value of column n (< kBlockColumns) in a row of kernel-layout words of one block.
inline int kernel_nibble(const int32_t* block_words, int64_t n) {
  return (static_cast<uint32_t>(block_words[n % kBlockWords]) >> (4 * (n / kBlockWords))) & 0xF;
}

#ifdef AWQ_LINEAR_AVX2
inline __m256i nibble_of(__m256i words, int i) {
  return _mm256_and_si256(_mm256_srli_epi32(words, 4 * i), _mm256_set1_epi32(0xF));
}

// Nibble i of 8 words as float, left in place (times 16^i) to save a shift: exact, as q * 16^i has 4 significant
// bits. The top nibble is shifted down instead, since in place it would set the sign bit.
inline __m256 nibble_in_place(__m256i words, int i) {
  if (i == 7) return _mm256_cvtepi32_ps(_mm256_srli_epi32(words, 28));
  return _mm256_cvtepi32_ps(_mm256_and_si256(words, _mm256_set1_epi32(0xF << (4 * i))));
}

// 16^-i for nibble i < 7 (what nibble_in_place leaves on the sums), 1 for the top one.
inline float nibble_weight(int i) { return i == 7 ? 1.f : 1.f / static_cast<float>(1 << (4 * i)); }

inline __m256 load_scales(const at::Half* scales) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales)));
}

// out[r][0..63] += the block's contribution of group g for kRows rows, in passes of kNibbles column groups of 8:
// kRows * kNibbles accumulators stay in registers (8 with up to 16 registers of AVX2).
template <int kRows, int kNibbles>
inline void block_group(const float* x, int64_t K, const int32_t* words, int64_t k_begin,
                        int64_t k_end, __m256i zero_words, const at::Half* scales, const float* x_sums, float* out) {
  for (int pass = 0; pass < 8 / kNibbles; ++pass) {
    __m256 acc[kRows][kNibbles];
    for (int r = 0; r < kRows; ++r)
      for (int i = 0; i < kNibbles; ++i) acc[r][i] = _mm256_setzero_ps();
    for (int64_t k = k_begin; k < k_end; ++k) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + k * kBlockWords));
#pragma GCC unroll 8
      for (int i = 0; i < kNibbles; ++i) {
        const __m256 q = nibble_in_place(w, pass * kNibbles + i);
        for (int r = 0; r < kRows; ++r) acc[r][i] = _mm256_fmadd_ps(_mm256_broadcast_ss(x + r * K + k), q, acc[r][i]);
      }
    }
    for (int i = 0; i < kNibbles; ++i) {
      const int nibble = pass * kNibbles + i;
      const __m256 s = load_scales(scales + 8 * nibble);
      const __m256 sz = _mm256_mul_ps(s, _mm256_cvtepi32_ps(nibble_of(zero_words, nibble)));
      const __m256 s_in_place = _mm256_mul_ps(s, _mm256_set1_ps(nibble_weight(nibble)));
      for (int r = 0; r < kRows; ++r) {
        float* o = out + r * kBlockColumns + 8 * nibble;
        __m256 total = _mm256_fmadd_ps(s_in_place, acc[r][i], _mm256_loadu_ps(o));
        total = _mm256_fnmadd_ps(sz, _mm256_set1_ps(x_sums[r]), total);
        _mm256_storeu_ps(o, total);
      }
    }
  }
}

// Where one block of 64 columns keeps its weights: words [K, 8], zero words [K / G, 8], scales [K / G, 64].
struct Block {
  const int32_t* words;
  const int32_t* zero_words;
  const at::Half* scales;
  Block(const int32_t* qweight, const int32_t* qzeros, const at::Half* all_scales, int64_t K, int64_t G, int64_t b)
      : words(qweight + b * K * kBlockWords), zero_words(qzeros + b * (K / G) * kBlockWords),
        scales(all_scales + b * (K / G) * kBlockColumns) {}
};

// The block's contribution of group g to kRows rows (x, x_sums and out already offset to the first row).
template <int kRows>
void block_rows(const float* x, int64_t K, const Block& block, int64_t G, int64_t g, const float* x_sums,
                int64_t num_groups, float* out) {
  constexpr int kNibbles = kRows == 1 ? 8 : kRows == 2 ? 4 : 2;
  const __m256i zero_words = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block.zero_words + g * kBlockWords));
  float sums[kRows];
  for (int r = 0; r < kRows; ++r) sums[r] = x_sums[r * num_groups + g];
  block_group<kRows, kNibbles>(x, K, block.words, g * G, (g + 1) * G, zero_words, block.scales + g * kBlockColumns,
                               sums, out);
}
#else
template <int kRows>
void block_rows(const float* x, int64_t K, const Block& block, int64_t G, int64_t g, const float* x_sums,
                int64_t num_groups, float* out) {
  for (int64_t n = 0; n < kBlockColumns; ++n) {
    const float s = half_to_float(block.scales[g * kBlockColumns + n]);
    const float z = static_cast<float>(kernel_nibble(block.zero_words + g * kBlockWords, n));
    for (int r = 0; r < kRows; ++r) {
      float acc = 0.f;
      for (int64_t k = g * G; k < (g + 1) * G; ++k)
        acc += x[r * K + k] * static_cast<float>(kernel_nibble(block.words + k * kBlockWords, n));
      out[r * kBlockColumns + n] += s * acc - s * z * x_sums[r * num_groups + g];
    }
  }
}
#endif

void fused_linear(const float* x, int64_t M, int64_t K, int64_t N, const int32_t* qweight, const int32_t* qzeros,
                  const at::Half* scales, int64_t G, const float* bias, float* out) {
  const int64_t num_groups = K / G;
  std::vector<float> x_sums(M * num_groups);  // [M, num_groups]: each row's sum over each group
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < num_groups; ++g) {
      float sum = 0.f;
      for (int64_t k = g * G; k < (g + 1) * G; ++k) sum += x[m * K + k];
      x_sums[m * num_groups + g] = sum;
    }
  // Group by group, so a group's weights (G * 32 bytes of the block) stay in L1 for every tile of 4 rows.
  at::parallel_for(0, num_blocks(N), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> block_out(M * kBlockColumns);
    for (int64_t b = begin; b < end; ++b) {
      const Block block(qweight, qzeros, scales, K, G, b);
      std::fill(block_out.begin(), block_out.end(), 0.f);
      for (int64_t g = 0; g < num_groups; ++g) {
        for (int64_t first = 0; first < M; first += 4) {
          const float* rows_x = x + first * K;
          const float* sums = x_sums.data() + first * num_groups;
          float* rows_out = block_out.data() + first * kBlockColumns;
          switch (std::min<int64_t>(4, M - first)) {
            case 1: block_rows<1>(rows_x, K, block, G, g, sums, num_groups, rows_out); break;
            case 2: block_rows<2>(rows_x, K, block, G, g, sums, num_groups, rows_out); break;
            case 3: block_rows<3>(rows_x, K, block, G, g, sums, num_groups, rows_out); break;
            default: block_rows<4>(rows_x, K, block, G, g, sums, num_groups, rows_out);
          }
        }
      }
      const int64_t width = std::min(kBlockColumns, N - b * kBlockColumns);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < width; ++n) {
          const int64_t column = b * kBlockColumns + n;
          out[m * N + column] = block_out[m * kBlockColumns + n] + (bias ? bias[column] : 0.f);
        }
    }
  });
}

// Columns [b_begin * 64, b_end * 64) of W as float32 into `tile` [K, (b_end - b_begin) * 64].
void dequantize_blocks(const int32_t* qweight, const int32_t* qzeros, const at::Half* scales, int64_t K, int64_t N,
                       int64_t G, int64_t b_begin, int64_t b_end, float* tile) {
  const int64_t width = (b_end - b_begin) * kBlockColumns;
  at::parallel_for(0, K, 16, [&](int64_t k_begin, int64_t k_end) {
    for (int64_t k = k_begin; k < k_end; ++k) {
      const int64_t g = k / G;
      for (int64_t b = b_begin; b < b_end; ++b) {
        const Block block(qweight, qzeros, scales, K, G, b);
        const int32_t* words = block.words + k * kBlockWords;
        const int32_t* zero_words = block.zero_words + g * kBlockWords;
        const at::Half* block_scales = block.scales + g * kBlockColumns;
        float* row = tile + k * width + (b - b_begin) * kBlockColumns;
        for (int64_t n = 0; n < kBlockColumns; ++n)
          row[n] = static_cast<float>(kernel_nibble(words, n) - kernel_nibble(zero_words, n)) *
                   half_to_float(block_scales[n]);
      }
    }
  });
}

void check_weights(const torch::Tensor& qweight, const torch::Tensor& qzeros, const torch::Tensor& scales,
                   int64_t K, int64_t N, int64_t G) {
  TORCH_CHECK(G > 0 && K % G == 0, "in_features (", K, ") must be a positive multiple of group_size (", G, ")");
  TORCH_CHECK(N > 0 && N % 8 == 0, "out_features (", N, ") must be a positive multiple of 8");
  const int64_t blocks = num_blocks(N);
  for (const auto* t : {&qweight, &qzeros}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kInt && t->is_contiguous() && t->dim() == 3,
                "qweight and qzeros must be contiguous int32 CPU tensors in the kernel layout (awq_repack)");
  }
  TORCH_CHECK(qweight.sizes() == at::IntArrayRef({blocks, K, kBlockWords}), "qweight must be [", blocks, ", ", K,
              ", ", kBlockWords, "], got ", qweight.sizes());
  TORCH_CHECK(qzeros.sizes() == at::IntArrayRef({blocks, K / G, kBlockWords}), "qzeros must be [", blocks, ", ",
              K / G, ", ", kBlockWords, "], got ", qzeros.sizes());
  TORCH_CHECK(scales.device().is_cpu() && scales.scalar_type() == at::kHalf && scales.is_contiguous() &&
                  scales.sizes() == at::IntArrayRef({blocks, K / G, kBlockColumns}),
              "scales must be a contiguous float16 CPU tensor [", blocks, ", ", K / G, ", ", kBlockColumns, "], got ",
              scales.sizes());
}

}  // namespace

// AWQ checkpoint words [R, N / 8] -> kernel layout [ceil(N / 64), R, 8] (see the top of this file).
torch::Tensor awq_repack(torch::Tensor packed, int64_t N) {
  TORCH_CHECK(packed.device().is_cpu() && packed.scalar_type() == at::kInt && packed.dim() == 2,
              "packed must be an int32 CPU matrix");
  TORCH_CHECK(N % 8 == 0 && packed.size(1) == N / 8, "packed must be [rows, ", N / 8, "] for N = ", N, ", got ",
              packed.sizes());
  const torch::Tensor source = packed.contiguous();
  const int64_t R = source.size(0);
  torch::Tensor out = torch::zeros({num_blocks(N), R, kBlockWords}, source.options());
  const uint32_t* in = reinterpret_cast<const uint32_t*>(source.data_ptr<int32_t>());
  uint32_t* result = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>());
  at::parallel_for(0, R, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t j = 0; j < N / 8; ++j) {
        const uint32_t word = in[r * (N / 8) + j];
        for (int i = 0; i < 8; ++i) {
          const int64_t n = 8 * j + kOrder[i], b = n / kBlockColumns, within = n % kBlockColumns;
          result[(b * R + r) * kBlockWords + within % kBlockWords] |=
              ((word >> (4 * i)) & 0xFu) << (4 * (within / kBlockWords));
        }
      }
    }
  });
  return out;
}

// out = x @ W for a step of many rows, which is compute-bound: a tile of columns at a time is dequantized into
// float32 and multiplied with BLAS.
void multiply_dequantized_tiles(const torch::Tensor& x, const int32_t* qw, const int32_t* qz, const at::Half* s,
                                int64_t G, torch::Tensor& out) {
  const int64_t K = x.size(1), N = out.size(1);
  const int64_t tile_blocks = std::max<int64_t>(1, kTileBytes / (K * kBlockColumns * 4));
  torch::Tensor tile = torch::empty({K, tile_blocks * kBlockColumns}, x.options());
  for (int64_t b = 0; b < num_blocks(N); b += tile_blocks) {
    const int64_t b_end = std::min(num_blocks(N), b + tile_blocks);
    const int64_t width = (b_end - b) * kBlockColumns, columns = std::min(width, N - b * kBlockColumns);
    torch::Tensor weights = tile.narrow(1, 0, width);
    if (width != tile.size(1)) weights = torch::empty({K, width}, x.options());
    dequantize_blocks(qw, qz, s, K, N, G, b, b_end, weights.data_ptr<float>());
    out.narrow(1, b * kBlockColumns, columns).copy_(x.mm(weights.narrow(1, 0, columns)));
  }
}

// x: float32 [..., K]; qweight, qzeros, scales in the kernel layout; bias float32 [N] -> float32 [..., N].
torch::Tensor awq_linear(torch::Tensor input, torch::Tensor qweight, torch::Tensor qzeros, torch::Tensor scales,
                         int64_t group_size, int64_t out_features, std::optional<torch::Tensor> bias) {
  TORCH_CHECK(input.device().is_cpu() && input.scalar_type() == at::kFloat && input.dim() >= 1,
              "x must be a float32 CPU tensor [..., K], got ", input.sizes(), " ", input.scalar_type());
  // [..., K] -> [M, K], copied only when its rows are not contiguous already. (A decode step's plain 2-D input
  // skips even the reshape: this runs for every projection of every layer.)
  const bool plain = input.dim() == 2 && input.is_contiguous();
  const torch::Tensor x = plain ? input : input.reshape({-1, input.size(-1)}).contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = out_features, G = group_size;
  check_weights(qweight, qzeros, scales, K, N, G);
  const float* bias_data = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous() && bias->numel() == N,
                "bias must be a contiguous float32 vector of ", N);
    bias_data = bias->data_ptr<float>();
  }
  torch::Tensor out = torch::empty({M, N}, x.options());
  const int32_t* qw = qweight.data_ptr<int32_t>();
  const int32_t* qz = qzeros.data_ptr<int32_t>();
  const at::Half* s = scales.data_ptr<at::Half>();
  if (M <= kMaxFusedRows) {
    fused_linear(x.data_ptr<float>(), M, K, N, qw, qz, s, G, bias_data, out.data_ptr<float>());
  } else {
    multiply_dequantized_tiles(x, qw, qz, s, G, out);
    if (bias_data) out.add_(*bias);
  }
  if (plain) return out;
  std::vector<int64_t> output_shape = input.sizes().vec();
  output_shape.back() = N;
  return out.view(output_shape);
}

// W as float32 [K, N] from the kernel layout (what a many-row step multiplies, one tile at a time).
torch::Tensor awq_dequantize(torch::Tensor qweight, torch::Tensor qzeros, torch::Tensor scales, int64_t group_size,
                             int64_t out_features) {
  const int64_t K = qweight.size(1), N = out_features;
  check_weights(qweight, qzeros, scales, K, N, group_size);
  torch::Tensor full = torch::empty({K, num_blocks(N) * kBlockColumns}, torch::dtype(torch::kFloat32));
  dequantize_blocks(qweight.data_ptr<int32_t>(), qzeros.data_ptr<int32_t>(), scales.data_ptr<at::Half>(), K, N,
                    group_size, 0, num_blocks(N), full.data_ptr<float>());
  return full.narrow(1, 0, N).contiguous();
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("awq_repack", &awq_repack, "AWQ checkpoint words [R, N/8] -> the kernel layout [ceil(N/64), R, 8]",
             pybind11::arg("packed"), pybind11::arg("out_features"));
  module.def("awq_linear", &awq_linear, "x @ W (+ bias) with W as AWQ 4-bit weights in the kernel layout (CPU)",
             pybind11::arg("x"), pybind11::arg("qweight"), pybind11::arg("qzeros"), pybind11::arg("scales"),
             pybind11::arg("group_size"), pybind11::arg("out_features"), pybind11::arg("bias") = pybind11::none());
  module.def("awq_dequantize", &awq_dequantize, "W as float32 [K, N] from the kernel layout (CPU)",
             pybind11::arg("qweight"), pybind11::arg("qzeros"), pybind11::arg("scales"), pybind11::arg("group_size"),
             pybind11::arg("out_features"));
}

// The CPU layer's forward as a torch operator, TORCH_EXTENSION_NAME::linear, for the decoder program.
TORCH_LIBRARY(TORCH_EXTENSION_NAME, library) {
  library.def("linear(Tensor x, Tensor qweight, Tensor qzeros, Tensor scales, int group_size, int out_features, "
              "Tensor? bias) -> Tensor",
              &awq_linear);
}
