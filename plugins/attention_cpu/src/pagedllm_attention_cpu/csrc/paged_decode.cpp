// Paged attention for decode rows (one new token per sequence) on the CPU.
//
// Each (sequence, KV head) pair is one task: its query heads' scores against every key of the
// sequence are computed straight from the paged cache (no gather into a padded copy), softmaxed,
// and used to sum the values. Keys and values are read once per step, which is what bounds decode
// attention on a CPU. Accumulation is in float32 whatever the cache dtype.
//
// An fp8 cache (E4M3 or E5M2 bytes, per-layer scales) is read one token row at a time into float32
// through a 256-entry table; the key scale is folded into the query and the value scale into the
// softmax normaliser, so the inner loops are the float32 ones.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace {

template <typename scalar_t>
inline float dot(const float* query, const scalar_t* key, int64_t head_size) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < head_size; ++d) sum += query[d] * static_cast<float>(key[d]);
  return sum;
}

#if defined(__AVX2__) && defined(__FMA__)
// float32 keys with a head size that is a multiple of 16: two accumulators halve the FMA latency chain.
template <>
inline float dot<float>(const float* query, const float* key, int64_t head_size) {
  if (head_size % 16) {
    float sum = 0.f;
    for (int64_t d = 0; d < head_size; ++d) sum += query[d] * key[d];
    return sum;
  }
  __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
  for (int64_t d = 0; d < head_size; d += 16) {
    even = _mm256_fmadd_ps(_mm256_loadu_ps(query + d), _mm256_loadu_ps(key + d), even);
    odd = _mm256_fmadd_ps(_mm256_loadu_ps(query + d + 8), _mm256_loadu_ps(key + d + 8), odd);
  }
  const __m256 both = _mm256_add_ps(even, odd);
  __m128 half = _mm_add_ps(_mm256_castps256_ps128(both), _mm256_extractf128_ps(both, 1));
  half = _mm_add_ps(half, _mm_movehl_ps(half, half));
  half = _mm_add_ss(half, _mm_movehdup_ps(half));
  return _mm_cvtss_f32(half);
}
#endif

template <typename scalar_t>
inline void add_scaled(float* accumulator, const scalar_t* value, float weight, int64_t head_size) {
#pragma omp simd
  for (int64_t d = 0; d < head_size; ++d) accumulator[d] += weight * static_cast<float>(value[d]);
}

// Token rows read in place from a cache in the model's dtype.
template <typename cache_t>
struct DirectRows {
  const cache_t* data;
  const cache_t* row(int64_t offset, float*) const { return data + offset; }
};

// Token rows of an fp8 cache, widened to float32 into the caller's scratch row.
struct Fp8Rows {
  const uint8_t* data;
  const float* table;
  int64_t row_size;
  const float* row(int64_t offset, float* scratch) const {
    const uint8_t* bytes = data + offset;
    for (int64_t i = 0; i < row_size; ++i) scratch[i] = table[bytes[i]];
    return scratch;
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

template <typename scalar_t, typename Rows>
void paged_decode_kernel(
    torch::Tensor& output, const torch::Tensor& query, const Rows& key_rows, const Rows& value_rows,
    const torch::Tensor& key_cache, const torch::Tensor& token_index, const torch::Tensor& block_tables,
    const torch::Tensor& seq_lens, double scale, double k_scale, double v_scale) {
  const int64_t num_rows = token_index.size(0);
  const int64_t num_heads = query.size(1);
  const int64_t head_size = query.size(2);
  const int64_t block_size = key_cache.size(1);
  const int64_t num_kv_heads = key_cache.size(2);
  const int64_t group_size = num_heads / num_kv_heads;
  const int64_t max_blocks = block_tables.size(1);
  const int64_t query_stride = query.stride(0);  // query may be a slice of a fused projection's rows

  // Strides of the cache [num_blocks, block_size, num_kv_heads, head_size] (contiguous).
  const int64_t block_stride = block_size * num_kv_heads * head_size;
  const int64_t token_stride = num_kv_heads * head_size;

  const scalar_t* query_data = query.data_ptr<scalar_t>();
  scalar_t* output_data = output.data_ptr<scalar_t>();
  const int64_t* token_data = token_index.data_ptr<int64_t>();
  const int32_t* table_data = block_tables.data_ptr<int32_t>();
  const int32_t* seq_len_data = seq_lens.data_ptr<int32_t>();
  const float query_scale = static_cast<float>(scale * k_scale);
  const float value_scale = static_cast<float>(v_scale);

  // One task per sequence: its positions are visited in order, all KV heads of a position together,
  // so every block is read front to back exactly once for keys and once for values.
  at::parallel_for(0, num_rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> queries(num_heads * head_size);
    std::vector<float> accumulators(num_heads * head_size);
    std::vector<float> normalisers(num_heads);
    std::vector<float> scores;
    std::vector<float> scratch(token_stride);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t token = token_data[row];
      const int64_t seq_len = seq_len_data[row];
      const int32_t* block_table = table_data + row * max_blocks;
      scores.resize(num_heads * seq_len);

      const scalar_t* q = query_data + token * query_stride;
      for (int64_t i = 0; i < num_heads * head_size; ++i) queries[i] = static_cast<float>(q[i]) * query_scale;

      // scores[head * seq_len + position] = q_head . k_position (of the head's KV group)
      for (int64_t block_index = 0, position = 0; position < seq_len; ++block_index) {
        const int64_t block_start = block_table[block_index] * block_stride;
        for (int64_t offset = 0; offset < block_size && position < seq_len; ++offset, ++position) {
          const auto* keys = key_rows.row(block_start + offset * token_stride, scratch.data());
          for (int64_t head = 0; head < num_heads; ++head) {
            scores[head * seq_len + position] =
                dot(&queries[head * head_size], keys + (head / group_size) * head_size, head_size);
          }
        }
      }

      // Softmax per head; the normaliser is applied once at the end.
      for (int64_t head = 0; head < num_heads; ++head) {
        float* head_scores = &scores[head * seq_len];
        const float maximum = *std::max_element(head_scores, head_scores + seq_len);
        float total = 0.f;
        for (int64_t position = 0; position < seq_len; ++position) {
          head_scores[position] = std::exp(head_scores[position] - maximum);
          total += head_scores[position];
        }
        normalisers[head] = value_scale / total;
      }

      std::fill(accumulators.begin(), accumulators.end(), 0.f);
      for (int64_t block_index = 0, position = 0; position < seq_len; ++block_index) {
        const int64_t block_start = block_table[block_index] * block_stride;
        for (int64_t offset = 0; offset < block_size && position < seq_len; ++offset, ++position) {
          const auto* values = value_rows.row(block_start + offset * token_stride, scratch.data());
          for (int64_t head = 0; head < num_heads; ++head) {
            add_scaled(&accumulators[head * head_size], values + (head / group_size) * head_size,
                       scores[head * seq_len + position], head_size);
          }
        }
      }

      scalar_t* out = output_data + token * num_heads * head_size;
      for (int64_t i = 0; i < num_heads * head_size; ++i) {
        out[i] = static_cast<scalar_t>(accumulators[i] * normalisers[i / head_size]);
      }
    }
  });
}

}  // namespace

// Fills output[token_index[i]] for each decode row i; every other row of output is left as is.
// k_scale and v_scale multiply an fp8 cache's keys and values (1.0 for a cache in the model's dtype).
void paged_decode(
    torch::Tensor output, torch::Tensor query, torch::Tensor key_cache, torch::Tensor value_cache,
    torch::Tensor token_index, torch::Tensor block_tables, torch::Tensor seq_lens, double scale, double k_scale,
    double v_scale) {
  TORCH_CHECK(output.is_contiguous(), "output must be contiguous");
  TORCH_CHECK(query.stride(2) == 1 && query.stride(1) == query.size(2),
              "query's heads must be contiguous within a token row (rows may be strided)");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "the KV cache must be contiguous");
  const auto cache_type = key_cache.scalar_type();
  const bool fp8 = cache_type == at::kFloat8_e4m3fn || cache_type == at::kFloat8_e5m2;
  TORCH_CHECK(query.scalar_type() == output.scalar_type() && (fp8 || query.scalar_type() == cache_type),
              "query and output must share a dtype, and the KV cache it or an fp8 one");
  TORCH_CHECK(value_cache.scalar_type() == cache_type, "keys and values must share a dtype");
  TORCH_CHECK(token_index.scalar_type() == at::kLong, "token_index must be int64");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && seq_lens.scalar_type() == at::kInt,
              "block_tables and seq_lens must be int32");
  TORCH_CHECK(block_tables.is_contiguous() && seq_lens.is_contiguous() && token_index.is_contiguous(),
              "index tensors must be contiguous");
  TORCH_CHECK(query.size(1) % key_cache.size(2) == 0, "query heads must divide into KV head groups");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, query.scalar_type(), "paged_decode", [&] {
    if (fp8) {
      const float* table = cache_type == at::kFloat8_e4m3fn ? fp8_table<c10::Float8_e4m3fn>()
                                                             : fp8_table<c10::Float8_e5m2>();
      const int64_t row_size = key_cache.size(2) * key_cache.size(3);
      const Fp8Rows keys{static_cast<const uint8_t*>(key_cache.data_ptr()), table, row_size};
      const Fp8Rows values{static_cast<const uint8_t*>(value_cache.data_ptr()), table, row_size};
      paged_decode_kernel<scalar_t>(output, query, keys, values, key_cache, token_index, block_tables, seq_lens,
                                    scale, k_scale, v_scale);
    } else {
      const DirectRows<scalar_t> keys{key_cache.data_ptr<scalar_t>()};
      const DirectRows<scalar_t> values{value_cache.data_ptr<scalar_t>()};
      paged_decode_kernel<scalar_t>(output, query, keys, values, key_cache, token_index, block_tables, seq_lens,
                                    scale, k_scale, v_scale);
    }
  });
}

// Stores key and value [num_tokens, num_kv_heads, head_size] into the slots slot_mapping names, in caches of
// their dtype [num_blocks, block_size, num_kv_heads, head_size]. Tokens and heads may be strided (slices of a
// fused projection's output); the values of a head may not.
void write_kv_cache(torch::Tensor key, torch::Tensor value, torch::Tensor key_cache, torch::Tensor value_cache,
                    torch::Tensor slot_mapping) {
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "the KV cache must be contiguous");
  TORCH_CHECK(key.scalar_type() == key_cache.scalar_type() && value.scalar_type() == key_cache.scalar_type() &&
                  value_cache.scalar_type() == key_cache.scalar_type(),
              "keys, values and the cache must share a dtype");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.dim() == 1 && slot_mapping.is_contiguous(),
              "slot_mapping must be a contiguous int64 vector");
  const int64_t num_tokens = slot_mapping.size(0), num_kv_heads = key_cache.size(2), head_size = key_cache.size(3);
  const int64_t num_slots = key_cache.size(0) * key_cache.size(1);
  for (const torch::Tensor* rows : {&key, &value}) {
    TORCH_CHECK(rows->dim() == 3 && rows->size(0) == num_tokens && rows->size(1) == num_kv_heads &&
                    rows->size(2) == head_size,
                "keys and values must be [", num_tokens, ", ", num_kv_heads, ", ", head_size, "], got ", rows->sizes());
    TORCH_CHECK(rows->stride(2) == 1, "the values of a key or value head must be contiguous");
  }
  const int64_t* slots = slot_mapping.data_ptr<int64_t>();
  for (int64_t token = 0; token < num_tokens; ++token) {
    TORCH_CHECK(slots[token] >= 0 && slots[token] < num_slots, "slot ", slots[token], " is outside the cache's ",
                num_slots, " slots");
  }
  const int64_t element_size = key_cache.element_size(), head_bytes = head_size * element_size;
  const auto copy_heads = [&](const torch::Tensor& rows, torch::Tensor& cache) {
    const char* source = static_cast<const char*>(rows.data_ptr());
    char* destination = static_cast<char*>(cache.data_ptr());
    for (int64_t token = 0; token < num_tokens; ++token) {
      for (int64_t head = 0; head < num_kv_heads; ++head) {
        std::memcpy(destination + (slots[token] * num_kv_heads + head) * head_bytes,
                    source + (token * rows.stride(0) + head * rows.stride(1)) * element_size, head_bytes);
      }
    }
  };
  copy_heads(key, key_cache);
  copy_heads(value, value_cache);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("paged_decode", &paged_decode, "Paged attention of one new token per sequence (CPU)");
  module.def("write_kv_cache", &write_kv_cache, "Store new keys and values in their cache slots (CPU)");
}
