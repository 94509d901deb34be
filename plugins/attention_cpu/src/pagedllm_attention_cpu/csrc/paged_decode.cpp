// Paged attention for decode rows (one new token per sequence) on the CPU.
//
// Each sequence is one task. KV head by KV head, its rows are read straight from the paged cache (no
// gather into a padded copy), scored against every query head of the head's group in one pass,
// softmaxed, and used to sum the values for every head of the group in one pass. Accumulation is in
// float32 whatever the cache dtype; bfloat16 and float16 rows are widened in registers as they are loaded,
// so a step reads half of float32's bytes and writes no widened copy. The inner loops work on the widest
// vectors the build has (AVX-512's 16 floats, AVX2's 8) and keep their sums in registers: a vector's worth of
// rows' dot products reduced together, 64 output values of up to four heads at a time. Rows a little ahead are
// prefetched, as the block table scatters them where the hardware's prefetchers do not look.
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

using L = WidestLanes;
using Vec = L::Vec;
constexpr int64_t kWidth = sizeof(Vec) / sizeof(float);
constexpr int64_t kHeadsPerPass = kWidth >= 16 ? 4 : 2;  // query heads summing values in one pass (registers)
constexpr int64_t kValuePrefetchDistance = 16;  // rows

template <typename value_t>
inline float dot(const float* query, const value_t* row, int64_t head_size) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < head_size; ++d) sum += query[d] * static_cast<float>(row[d]);
  return sum;
}

// scores[h][p] = queries[h] . rows[p] for h < group, p < count (scores [group][count], queries
// [group][head_size]). A vector's worth of rows at a time: each row has its own accumulator, and one transposing
// reduction adds them all up; the rows stay in L1 while every query head of the group is scored against them.
template <typename value_t>
inline void group_dots(const float* queries, int64_t group, const value_t* const* rows, int64_t count,
                       int64_t head_size, float* scores) {
  int64_t p = 0;
  if (head_size % kWidth == 0) {
    for (; p + kWidth <= count; p += kWidth) {
      // Rows two vectors ahead, so that their cache lines are on their way (the block table scatters them).
      for (int64_t j = p + 2 * kWidth; j < std::min(p + 3 * kWidth, count); ++j) prefetch_row(rows[j], head_size);
      for (int64_t h = 0; h < group; ++h) {
        Vec sums[kWidth];
        for (auto& sum : sums) sum = L::set1(0.f);
        for (int64_t d = 0; d < head_size; d += kWidth) {
          const Vec query = L::load(queries + h * head_size + d);
          for (int64_t j = 0; j < kWidth; ++j) sums[j] = L::fmadd(query, L::load(rows[p + j] + d), sums[j]);
        }
        L::store(scores + h * count + p, L::transpose_sums(sums));
      }
    }
  }
  for (; p < count; ++p) {
    for (int64_t h = 0; h < group; ++h) scores[h * count + p] = dot(queries + h * head_size, rows[p], head_size);
  }
}

// weights[p] = e^(scores[p] - maximum) for p < count; returns their sum.
inline float exponentials(const float* scores, int64_t count, float maximum, float* weights) {
  Vec totals = L::set1(0.f);
  int64_t p = 0;
  for (; p + kWidth <= count; p += kWidth) {
    const Vec weight = exp_nonpositive<L>(L::add(L::load(scores + p), L::set1(-maximum)));
    L::store(weights + p, weight);
    totals = L::add(totals, weight);
  }
  float total = L::reduce_add(totals);
  for (; p < count; ++p) total += weights[p] = std::exp(scores[p] - maximum);
  return total;
}

// out[h] = sum over p < count of weights[h][p] * rows[p] for h < group (out [group][head_size]), kHeadsPerPass
// heads per pass over the rows.
template <typename value_t>
inline void group_weighted_sums(const float* weights, int64_t group, const value_t* const* rows, int64_t count,
                                int64_t head_size, float* out) {
  std::fill(out, out + group * head_size, 0.f);
  for (int64_t h = 0; h < group; h += kHeadsPerPass) {
    const float* w = weights + h * count;
    float* o = out + h * head_size;
    switch (std::min(kHeadsPerPass, group - h)) {
      case 4: add_weighted_rows<L, 4>(w, count, rows, count, head_size, o, kValuePrefetchDistance); break;
      case 3: add_weighted_rows<L, 3>(w, count, rows, count, head_size, o, kValuePrefetchDistance); break;
      case 2: add_weighted_rows<L, 2>(w, count, rows, count, head_size, o, kValuePrefetchDistance); break;
      default: add_weighted_rows<L, 1>(w, count, rows, count, head_size, o, kValuePrefetchDistance);
    }
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
  // finds its token rows (its KV heads' part) once, in place, or widened to float32 where the cache holds
  // fp8 bytes; then, KV head by KV head, the head's keys are scored against every query head of its group in
  // one pass and its values summed with each head's softmax weights in another.
  const int64_t heads_per_task = num_rows < at::get_num_threads() ? 1 : num_kv_heads;
  const int64_t tasks_per_row = num_kv_heads / heads_per_task, row_part = heads_per_task * head_size;
  at::parallel_for(0, num_rows * tasks_per_row, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> queries(group_size * head_size), head_outputs(group_size * head_size), normalisers(group_size);
    std::vector<float> scores, weights;
    std::vector<float> key_scratch, value_scratch;
    std::vector<const typename Rows::value_t*> key_parts, value_parts, keys, values;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / tasks_per_row, first_kv_head = task % tasks_per_row * heads_per_task;
      const int64_t token = token_data[row];
      const int64_t seq_len = seq_len_data[row];
      const int32_t* block_table = table_data + row * max_blocks;
      for (auto* buffer : {&scores, &weights}) buffer->resize(group_size * seq_len);
      for (auto* pointers : {&key_parts, &value_parts, &keys, &values}) pointers->resize(seq_len);
      if constexpr (Rows::kWidensRows) {
        key_scratch.resize(seq_len * row_part);
        value_scratch.resize(seq_len * row_part);
      }
      for (int64_t position = 0; position < seq_len; ++position) {
        const int64_t offset = block_table[position / block_size] * block_stride +
                               (position % block_size) * token_stride + first_kv_head * head_size;
        const int64_t scratch_offset = Rows::kWidensRows ? position * row_part : 0;
        key_parts[position] = key_rows.row(offset, row_part, key_scratch.data() + scratch_offset);
        value_parts[position] = value_rows.row(offset, row_part, value_scratch.data() + scratch_offset);
      }
      const scalar_t* q = query_data + token * query_stride;
      scalar_t* out = output_data + token * num_heads * head_size;

      for (int64_t kv_head = first_kv_head; kv_head < first_kv_head + heads_per_task; ++kv_head) {
        for (int64_t position = 0; position < seq_len; ++position) {
          keys[position] = key_parts[position] + (kv_head - first_kv_head) * head_size;
          values[position] = value_parts[position] + (kv_head - first_kv_head) * head_size;
        }
        const scalar_t* head_queries = q + kv_head * group_size * head_size;
        for (int64_t i = 0; i < group_size * head_size; ++i) queries[i] = static_cast<float>(head_queries[i]) * query_scale;
        group_dots(queries.data(), group_size, keys.data(), seq_len, head_size, scores.data());
        for (int64_t h = 0; h < group_size; ++h) {
          const float* head_scores = scores.data() + h * seq_len;
          const float maximum = *std::max_element(head_scores, head_scores + seq_len);
          normalisers[h] = value_scale / exponentials(head_scores, seq_len, maximum, weights.data() + h * seq_len);
        }
        group_weighted_sums(weights.data(), group_size, values.data(), seq_len, head_size, head_outputs.data());
        scalar_t* head_out = out + kv_head * group_size * head_size;
        for (int64_t i = 0; i < group_size * head_size; ++i) {
          head_out[i] = static_cast<scalar_t>(head_outputs[i] * normalisers[i / head_size]);
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
  check_attention_tensors(output, query, key_cache, value_cache);
  TORCH_CHECK(token_index.scalar_type() == at::kLong, "token_index must be int64");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && seq_lens.scalar_type() == at::kInt,
              "block_tables and seq_lens must be int32");
  TORCH_CHECK(block_tables.is_contiguous() && seq_lens.is_contiguous() && token_index.is_contiguous(),
              "index tensors must be contiguous");
  PAGED_ATTENTION_DISPATCH(query.scalar_type(), "paged_decode", [&] {
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
  const bool fp8 = is_fp8_cache(cache_type);
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
  PAGED_ATTENTION_DISPATCH(key.scalar_type(), "write_kv_cache", [&] {
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
  const bool fp8 = is_fp8_cache(cache_type);
  const double key_scale = fp8 ? k_scale.item<double>() : 1.0, value_scale = fp8 ? v_scale.item<double>() : 1.0;
  const torch::Tensor key_cache = kv_cache.select(0, 0), value_cache = kv_cache.select(0, 1);
  write_kv_cache(key, value, key_cache, value_cache, slot_mapping, key_scale, value_scale);
  torch::Tensor output = torch::empty(query.sizes(), query.options());
  paged_decode(output, query, key_cache, value_cache, token_index, block_tables, seq_lens, scale, key_scale,
               value_scale);
  return output;
}
