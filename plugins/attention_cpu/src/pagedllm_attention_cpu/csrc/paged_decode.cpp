// Paged attention for decode rows (one new token per sequence) on the CPU.
//
// Each sequence is one task. KV head by KV head, its rows are read straight from the paged cache (no
// gather into a padded copy), scored against each query head of the head's group, softmaxed, and
// used to sum the values. Accumulation is in float32 whatever the cache dtype. The inner loops keep
// their sums in registers: eight rows' dot products reduced together, 64 output values at a time.
//
// An fp8 cache (E4M3 or E5M2 bytes, per-layer scales) is widened into float32 rows (Fp8Rows); the
// key scale is folded into the query and the value scale into the softmax normaliser, so the inner
// loops are the float32 ones, over a quarter of float32's bytes.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attention_kernels.h"
#include "cache_rows.h"

namespace {

using namespace paged_attention;

#ifdef PAGED_ATTENTION_AVX2
// The dot products of `query` with 8 rows (head_size a multiple of 8), as the 8 lanes of the result: each row
// has its own accumulator, and one transposing reduction adds all eight.
inline __m256 dot8(const float* query, const float* const* rows, int64_t head_size) {
  __m256 sums[8];
  for (int i = 0; i < 8; ++i) sums[i] = _mm256_setzero_ps();
  for (int64_t d = 0; d < head_size; d += 8) {
    const __m256 q = _mm256_loadu_ps(query + d);
    for (int i = 0; i < 8; ++i) sums[i] = _mm256_fmadd_ps(q, _mm256_loadu_ps(rows[i] + d), sums[i]);
  }
  return Lanes<8>::transpose_sums(sums);
}
#endif

inline float dot(const float* query, const float* row, int64_t head_size) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < head_size; ++d) sum += query[d] * row[d];
  return sum;
}

// scores[p] = query . rows[p] for p < count.
inline void dots(const float* query, const float* const* rows, int64_t count, int64_t head_size, float* scores) {
  int64_t p = 0;
#ifdef PAGED_ATTENTION_AVX2
  if (head_size % 8 == 0) {
    for (; p + 8 <= count; p += 8) _mm256_storeu_ps(scores + p, dot8(query, rows + p, head_size));
  }
#endif
  for (; p < count; ++p) scores[p] = dot(query, rows[p], head_size);
}

// weights[p] = e^(scores[p] - maximum) for p < count; returns their sum.
inline float exponentials(const float* scores, int64_t count, float maximum, float* weights) {
  float total = 0.f;
  int64_t p = 0;
#ifdef PAGED_ATTENTION_AVX2
  __m256 totals = _mm256_setzero_ps();
  for (; p + 8 <= count; p += 8) {
    const __m256 weight = exp_nonpositive<Lanes<8>>(_mm256_sub_ps(_mm256_loadu_ps(scores + p), _mm256_set1_ps(maximum)));
    _mm256_storeu_ps(weights + p, weight);
    totals = _mm256_add_ps(totals, weight);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, totals);
  for (float lane : lanes) total += lane;
#endif
  for (; p < count; ++p) total += weights[p] = std::exp(scores[p] - maximum);
  return total;
}

// out[d] = sum over p < count of weights[p] * rows[p][d], d < head_size.
inline void weighted_sum(const float* weights, const float* const* rows, int64_t count, int64_t head_size, float* out) {
  int64_t d = 0;
#ifdef PAGED_ATTENTION_AVX2
  // 64 values at a time in 8 registers (the accumulators never leave them), then 8 at a time.
  for (; d + 64 <= head_size; d += 64) {
    __m256 sums[8];
    for (int i = 0; i < 8; ++i) sums[i] = _mm256_setzero_ps();
    for (int64_t p = 0; p < count; ++p) {
      const __m256 weight = _mm256_set1_ps(weights[p]);
      for (int i = 0; i < 8; ++i) sums[i] = _mm256_fmadd_ps(weight, _mm256_loadu_ps(rows[p] + d + 8 * i), sums[i]);
    }
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(out + d + 8 * i, sums[i]);
  }
  for (; d + 8 <= head_size; d += 8) {
    __m256 sum = _mm256_setzero_ps();
    for (int64_t p = 0; p < count; ++p) sum = _mm256_fmadd_ps(_mm256_set1_ps(weights[p]), _mm256_loadu_ps(rows[p] + d), sum);
    _mm256_storeu_ps(out + d, sum);
  }
#endif
  for (; d < head_size; ++d) {
    float sum = 0.f;
    for (int64_t p = 0; p < count; ++p) sum += weights[p] * rows[p][d];
    out[d] = sum;
  }
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

  // A task is one sequence, or one KV head of one when there are fewer sequences than threads (a single
  // stream then uses every core; with more sequences, whole rows read front to back are faster). A task
  // reads its token rows (its KV heads' part) once, widened to float32 where the cache holds another dtype;
  // then, KV head by KV head, the head's keys are scored against each query head of its group and its values
  // summed with each head's softmax weights.
  const int64_t heads_per_task = num_rows < at::get_num_threads() ? 1 : num_kv_heads;
  const int64_t tasks_per_row = num_kv_heads / heads_per_task, row_part = heads_per_task * head_size;
  at::parallel_for(0, num_rows * tasks_per_row, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> queries(head_size), head_output(head_size), scores, weights;
    std::vector<float> key_scratch, value_scratch;
    std::vector<const float*> key_parts, value_parts, keys, values;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / tasks_per_row, first_kv_head = task % tasks_per_row * heads_per_task;
      const int64_t token = token_data[row];
      const int64_t seq_len = seq_len_data[row];
      const int32_t* block_table = table_data + row * max_blocks;
      for (auto* buffer : {&scores, &weights}) buffer->resize(seq_len);
      for (auto* pointers : {&key_parts, &value_parts, &keys, &values}) pointers->resize(seq_len);
      key_scratch.resize(seq_len * row_part);
      value_scratch.resize(seq_len * row_part);
      for (int64_t position = 0; position < seq_len; ++position) {
        const int64_t offset = block_table[position / block_size] * block_stride +
                               (position % block_size) * token_stride + first_kv_head * head_size;
        key_parts[position] = key_rows.floats(offset, row_part, &key_scratch[position * row_part]);
        value_parts[position] = value_rows.floats(offset, row_part, &value_scratch[position * row_part]);
      }
      const scalar_t* q = query_data + token * query_stride;
      scalar_t* out = output_data + token * num_heads * head_size;

      for (int64_t kv_head = first_kv_head; kv_head < first_kv_head + heads_per_task; ++kv_head) {
        for (int64_t position = 0; position < seq_len; ++position) {
          keys[position] = key_parts[position] + (kv_head - first_kv_head) * head_size;
          values[position] = value_parts[position] + (kv_head - first_kv_head) * head_size;
        }
        for (int64_t head = kv_head * group_size; head < (kv_head + 1) * group_size; ++head) {
          for (int64_t d = 0; d < head_size; ++d) queries[d] = static_cast<float>(q[head * head_size + d]) * query_scale;
          dots(queries.data(), keys.data(), seq_len, head_size, scores.data());
          const float maximum = *std::max_element(scores.begin(), scores.end());
          const float normaliser = value_scale / exponentials(scores.data(), seq_len, maximum, weights.data());
          weighted_sum(weights.data(), values.data(), seq_len, head_size, head_output.data());
          for (int64_t d = 0; d < head_size; ++d) {
            out[head * head_size + d] = static_cast<scalar_t>(head_output[d] * normaliser);
          }
        }
      }
    }
  });
}

// Head rows of a step's keys or values into cache slots, quantized to an fp8 cache's bytes as the reference
// does (kv_quant.quantize_kv): x / scale in float32, clamped to the format's finite range, rounded to nearest
// even (c10's conversion, the one torch's .to() uses), so the bytes are the reference's exactly.
template <typename fp8_t, typename scalar_t>
void store_fp8_head(const scalar_t* source, uint8_t* destination, int64_t head_size, float scale) {
  const float limit = static_cast<float>(std::numeric_limits<fp8_t>::max());
  for (int64_t i = 0; i < head_size; ++i) {
    const float scaled = std::clamp(static_cast<float>(source[i]) / scale, -limit, limit);
    destination[i] = fp8_t(scaled).x;
  }
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
    with_cache_rows<scalar_t>(key_cache, value_cache, k_scale, v_scale, [&](auto keys, auto values, double key_scale,
                                                                            double value_scale) {
      paged_decode_kernel<scalar_t>(output, query, keys, values, key_cache, token_index, block_tables, seq_lens, scale,
                                    key_scale, value_scale);
    });
  });
}


// Stores key and value [num_tokens, num_kv_heads, head_size] into the slots slot_mapping names, in caches
// [num_blocks, block_size, num_kv_heads, head_size] of their dtype, or of an fp8 dtype, which holds key / k_scale
// and value / v_scale. Tokens and heads may be strided (slices of a fused projection's output); the values of a
// head may not.
void write_kv_cache(torch::Tensor key, torch::Tensor value, torch::Tensor key_cache, torch::Tensor value_cache,
                    torch::Tensor slot_mapping, double k_scale, double v_scale) {
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "the KV cache must be contiguous");
  const auto cache_type = key_cache.scalar_type();
  const bool fp8 = cache_type == at::kFloat8_e4m3fn || cache_type == at::kFloat8_e5m2;
  TORCH_CHECK(key.scalar_type() == value.scalar_type() && value_cache.scalar_type() == cache_type &&
                  (fp8 || key.scalar_type() == cache_type),
              "keys and values must share a dtype, and the cache it or an fp8 one");
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
  // store(source head, destination head) for every token and KV head of `rows`.
  const auto each_head = [&](const torch::Tensor& rows, torch::Tensor& cache, auto store) {
    const char* source = static_cast<const char*>(rows.data_ptr());
    char* destination = static_cast<char*>(cache.data_ptr());
    const int64_t source_size = rows.element_size(), cache_size = cache.element_size();
    for (int64_t token = 0; token < num_tokens; ++token) {
      for (int64_t head = 0; head < num_kv_heads; ++head) {
        store(source + (token * rows.stride(0) + head * rows.stride(1)) * source_size,
              destination + (slots[token] * num_kv_heads + head) * head_size * cache_size);
      }
    }
  };
  if (!fp8) {
    const int64_t head_bytes = head_size * key_cache.element_size();
    const auto copy = [&](const char* source, char* destination) { std::memcpy(destination, source, head_bytes); };
    each_head(key, key_cache, copy);
    each_head(value, value_cache, copy);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, key.scalar_type(), "write_kv_cache", [&] {
    const auto quantize = [&](auto format, float scale) {
      using fp8_t = decltype(format);
      return [=](const char* source, char* destination) {
        store_fp8_head<fp8_t>(reinterpret_cast<const scalar_t*>(source), reinterpret_cast<uint8_t*>(destination),
                              head_size, scale);
      };
    };
    if (cache_type == at::kFloat8_e4m3fn) {
      each_head(key, key_cache, quantize(c10::Float8_e4m3fn(), static_cast<float>(k_scale)));
      each_head(value, value_cache, quantize(c10::Float8_e4m3fn(), static_cast<float>(v_scale)));
    } else {
      each_head(key, key_cache, quantize(c10::Float8_e5m2(), static_cast<float>(k_scale)));
      each_head(value, value_cache, quantize(c10::Float8_e5m2(), static_cast<float>(v_scale)));
    }
  });
}

// One layer's attention in a step whose every token is a decode row (token_index, block_tables and seq_lens one
// entry per token, as CpuAttentionBackend.prepare plans them), as CpuAttentionBackend.forward computes it:
// stores key and value in kv_cache [2, num_blocks, block_size, num_kv_heads, head_size], then attends.
// k_scale and v_scale (0-d float32) are the layer's scales of an fp8 cache, ignored for any other cache.
torch::Tensor decode_attention(torch::Tensor query, torch::Tensor key, torch::Tensor value, torch::Tensor kv_cache,
                               torch::Tensor k_scale, torch::Tensor v_scale, torch::Tensor slot_mapping,
                               torch::Tensor token_index, torch::Tensor block_tables, torch::Tensor seq_lens,
                               double scale) {
  const auto cache_type = kv_cache.scalar_type();
  const bool fp8 = cache_type == at::kFloat8_e4m3fn || cache_type == at::kFloat8_e5m2;
  const double key_scale = fp8 ? k_scale.item<double>() : 1.0, value_scale = fp8 ? v_scale.item<double>() : 1.0;
  const torch::Tensor key_cache = kv_cache.select(0, 0), value_cache = kv_cache.select(0, 1);
  write_kv_cache(key, value, key_cache, value_cache, slot_mapping, key_scale, value_scale);
  torch::Tensor output = torch::empty(query.sizes(), query.options());
  paged_decode(output, query, key_cache, value_cache, token_index, block_tables, seq_lens, scale, key_scale,
               value_scale);
  return output;
}
