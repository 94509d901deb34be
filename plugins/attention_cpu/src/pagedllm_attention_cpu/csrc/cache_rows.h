// Reading the paged cache's token rows as float32, whatever the cache's dtype, for the attention kernels.

#pragma once

#include <torch/extension.h>

#include <array>
#include <cstdint>
#include <type_traits>

#include "vector_math.h"

// Runs the lambda after NAME with scalar_t the queries' dtype: float32, bfloat16 or float16 (the backend's
// model dtypes).
#define PAGED_ATTENTION_DISPATCH(TYPE, NAME, ...)                                   \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__)          \
                         AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__) AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__))

namespace paged_attention {

// The cache's token rows, read in one of two ways (each gives count values starting at element offset):
// row(offset, count, scratch) as value_t, which the vector loads take (Lanes::load), and floats(offset, count,
// scratch) as float32. Where a way needs a conversion, the values are widened into the caller's scratch
// (kWidensRows: row() does).

// Rows of a cache in the model's dtype: row() reads them in place; floats() widens bfloat16 and float16 ones.
template <typename cache_t>
struct DirectRows {
  using value_t = cache_t;
  static constexpr bool kWidensRows = false;
  const cache_t* data;
  const cache_t* row(int64_t offset, int64_t, float*) const { return data + offset; }
  const float* floats(int64_t offset, int64_t count, float* scratch) const {
    if constexpr (std::is_same_v<cache_t, float>) {
      return data + offset;
    } else {
      const cache_t* values = data + offset;
      int64_t i = 0;
#ifdef PAGED_ATTENTION_AVX2
      using L8 = Lanes<8>;
      for (; i + 8 <= count; i += 8) L8::store(scratch + i, L8::load(values + i));
#endif
      for (; i < count; ++i) scratch[i] = static_cast<float>(values[i]);
      return scratch;
    }
  }
};

template <typename fp8_t>
const float* fp8_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> values{};
    for (int bits = 0; bits < 256; ++bits) {
      values[bits] = static_cast<float>(fp8_t(static_cast<uint8_t>(bits), fp8_t::from_bits()));
    }
    return values;
  }();
  return table.data();
}

// Token rows of an fp8 cache, widened to float32 16 bytes at a time through float16 (F16C). An E5M2 byte is
// the top byte of the float16 of the same value. An E4M3 byte (sign, 4 exponent bits, 3 mantissa bits) in
// the top byte of a 16-bit word, shifted right by one with its sign repeated and the repeat cleared, is a
// float16 with the same fields: its value times 2^-8 (the exponent biases are 7 and 15), subnormals
// included, which the kernel's scales undo (kRowFactor). Both are exact; E4M3's NaNs (0x7F, 0xFF) are set
// to float16 NaNs, as the shift would make them finite.
template <typename fp8_t>
struct Fp8Rows {
  using value_t = float;
  static constexpr bool kWidensRows = true;
  static constexpr bool kE4M3 = std::is_same_v<fp8_t, c10::Float8_e4m3fn>;
  // What a row's floats are multiplied by: the scales of the cache are divided by it.
  static constexpr float kRowFactor = kE4M3 ? 1.f / 256.f : 1.f;
  const uint8_t* data;
  const float* floats(int64_t offset, int64_t count, float* scratch) const {
    const uint8_t* bytes = data + offset;
    int64_t i = 0;
#ifdef PAGED_ATTENTION_AVX2
    for (; i + 16 <= count; i += 16) {
      const __m256i words = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes + i)));
      __m256i halves = _mm256_slli_epi16(words, 8);
      if constexpr (kE4M3) {
        halves = _mm256_and_si256(_mm256_srai_epi16(halves, 1), _mm256_set1_epi16(static_cast<int16_t>(0xBFFF)));
        const __m256i nan = _mm256_cmpeq_epi16(_mm256_and_si256(words, _mm256_set1_epi16(0x7F)), _mm256_set1_epi16(0x7F));
        halves = _mm256_or_si256(halves, nan);
      }
      _mm256_storeu_ps(scratch + i, _mm256_cvtph_ps(_mm256_castsi256_si128(halves)));
      _mm256_storeu_ps(scratch + i + 8, _mm256_cvtph_ps(_mm256_extracti128_si256(halves, 1)));
    }
#endif
    const float* table = fp8_table<fp8_t>();
    for (; i < count; ++i) scratch[i] = table[bytes[i]] * kRowFactor;
    return scratch;
  }
  const float* row(int64_t offset, int64_t count, float* scratch) const { return floats(offset, count, scratch); }
};

// Whether a cache holds fp8 bytes (E4M3 or E5M2) rather than values in the model's dtype.
inline bool is_fp8_cache(at::ScalarType cache_type) {
  return cache_type == at::kFloat8_e4m3fn || cache_type == at::kFloat8_e5m2;
}

// The checks every kernel makes of its output, queries (rows may be strided: slices of a fused projection) and cache.
inline void check_attention_tensors(const torch::Tensor& output, const torch::Tensor& query,
                                    const torch::Tensor& key_cache, const torch::Tensor& value_cache) {
  TORCH_CHECK(output.is_contiguous(), "output must be contiguous");
  TORCH_CHECK(query.stride(2) == 1 && query.stride(1) == query.size(2),
              "query's heads must be contiguous within a token row (rows may be strided)");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "the KV cache must be contiguous");
  const auto cache_type = key_cache.scalar_type();
  TORCH_CHECK(query.scalar_type() == output.scalar_type() && (is_fp8_cache(cache_type) || query.scalar_type() == cache_type),
              "query and output must share a dtype, and the KV cache it or an fp8 one");
  TORCH_CHECK(value_cache.scalar_type() == cache_type, "keys and values must share a dtype");
  TORCH_CHECK(query.size(1) % key_cache.size(2) == 0, "query heads must divide into KV head groups");
}

// fn(key_rows, value_rows, k_scale, v_scale) with the row readers of the cache's dtype (scalar_t, the model's,
// or an fp8 one) and the scales its rows are to be multiplied by.
template <typename scalar_t, typename Fn>
void with_cache_rows(const torch::Tensor& key_cache, const torch::Tensor& value_cache, double k_scale, double v_scale,
                     Fn fn) {
  const auto cache_type = key_cache.scalar_type();
  if (is_fp8_cache(cache_type)) {
    const auto with_fp8_rows = [&](auto rows_of) {
      using Rows = decltype(rows_of);
      // Scaling by a power of two is exact, so the results are those of the rows' true values.
      fn(Rows{static_cast<const uint8_t*>(key_cache.data_ptr())}, Rows{static_cast<const uint8_t*>(value_cache.data_ptr())},
         k_scale / Rows::kRowFactor, v_scale / Rows::kRowFactor);
    };
    if (cache_type == at::kFloat8_e4m3fn) {
      with_fp8_rows(Fp8Rows<c10::Float8_e4m3fn>{});
    } else {
      with_fp8_rows(Fp8Rows<c10::Float8_e5m2>{});
    }
  } else {
    fn(DirectRows<scalar_t>{key_cache.data_ptr<scalar_t>()}, DirectRows<scalar_t>{value_cache.data_ptr<scalar_t>()},
       k_scale, v_scale);
  }
}

}  // namespace paged_attention
