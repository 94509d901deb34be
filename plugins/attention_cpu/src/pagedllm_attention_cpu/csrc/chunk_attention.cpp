// Causal paged attention for prompt chunks on the CPU: each chunk's queries against its sequence's keys and
// values, read in place from the paged cache (the chunk's own keys and values are stored there first).
//
// The work is cut into tasks of (chunk, KV head, kQueryTile positions). A task's query rows are the KV head's
// group of query heads at those positions: rows of one position share its causal limit, and every row shares
// the keys the task reads. Keys are visited kKeyTile at a time with flash attention's running softmax: the
// tile's keys are transposed into a scratch block so that its scores are register-blocked multiply-adds (a
// broadcast query value times a vector of keys), each row's running maximum and sum are updated, and the
// tile's values are added into the rows' float32 outputs with their weights. Accumulation is in float32
// whatever the dtypes; an fp8 cache's scales are folded in as the decode kernel folds them. Tasks differ in
// cost (later positions see more keys), so threads take them from a shared counter, costliest first.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
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
constexpr int64_t kKeyTile = 2 * kWidth;  // keys per pass: two vectors of scores per query row
constexpr int64_t kScoreRows = 8;  // query rows scored together (16 accumulators)
constexpr int64_t kValueRows = kWidth >= 16 ? 4 : 2;  // rows whose outputs are summed together (16 accumulators)
constexpr int64_t kQueryTile = 32;  // positions per task

struct Task {
  int64_t chunk, kv_head, first, count;  // positions first .. first + count of the chunk
  int64_t cost;  // query rows times keys seen, roughly
};

// scores[r][0:kKeyTile] = queries[r] . keys_t[:, 0:kKeyTile] for r < rows (a multiple of kScoreRows); keys_t is
// the tile's keys transposed, [head_size][kKeyTile].
void score_tile(const float* queries, const float* keys_t, int64_t rows, int64_t head_size, float* scores) {
  for (int64_t first_row = 0; first_row < rows; first_row += kScoreRows) {
    Vec sums[kScoreRows][2];
    for (auto& row : sums) row[0] = row[1] = L::set1(0.f);
    const float* query = queries + first_row * head_size;
    for (int64_t d = 0; d < head_size; ++d) {
      const Vec low = L::load(keys_t + d * kKeyTile), high = L::load(keys_t + d * kKeyTile + kWidth);
      for (int64_t r = 0; r < kScoreRows; ++r) {
        const Vec value = L::set1(query[r * head_size + d]);
        sums[r][0] = L::fmadd(value, low, sums[r][0]);
        sums[r][1] = L::fmadd(value, high, sums[r][1]);
      }
    }
    for (int64_t r = 0; r < kScoreRows; ++r) {
      L::store(scores + (first_row + r) * kKeyTile, sums[r][0]);
      L::store(scores + (first_row + r) * kKeyTile + kWidth, sums[r][1]);
    }
  }
}

// Turns a row's scores into its weights e^(score - maximum) for the first `visible` keys of the tile and 0 past
// them, moving its running maximum and sum on and rescaling the output summed so far when the maximum grows.
void softmax_step(float* scores, int64_t visible, float& maximum, float& sum, float* output, int64_t head_size) {
  if (visible <= 0) {
    std::fill(scores, scores + kKeyTile, 0.f);
    return;
  }
  std::fill(scores + visible, scores + kKeyTile, -std::numeric_limits<float>::infinity());
  const float tile_maximum = L::reduce_max(L::max(L::load(scores), L::load(scores + kWidth)));
  if (tile_maximum > maximum) {
    const float shrink = std::exp(maximum - tile_maximum);  // 0 on the row's first tile
    sum *= shrink;
    for (int64_t d = 0; d < head_size; ++d) output[d] *= shrink;
    maximum = tile_maximum;
  }
  const Vec shift = L::set1(-maximum);
  L::store(scores, exp_nonpositive<L>(L::add(L::load(scores), shift)));
  L::store(scores + kWidth, exp_nonpositive<L>(L::add(L::load(scores + kWidth), shift)));
  std::fill(scores + visible, scores + kKeyTile, 0.f);
  sum += L::reduce_add(L::add(L::load(scores), L::load(scores + kWidth)));
}

template <typename scalar_t, typename Rows>
void chunk_attention_kernel(torch::Tensor& output, const torch::Tensor& query, const Rows& key_rows,
                            const Rows& value_rows, const torch::Tensor& key_cache, const torch::Tensor& query_start,
                            const torch::Tensor& query_lens, const torch::Tensor& block_tables,
                            const torch::Tensor& seq_lens, double scale, double k_scale, double v_scale) {
  const int64_t num_chunks = query_start.size(0);
  const int64_t num_heads = query.size(1), head_size = query.size(2);
  const int64_t block_size = key_cache.size(1), num_kv_heads = key_cache.size(2);
  const int64_t group_size = num_heads / num_kv_heads, max_blocks = block_tables.size(1);
  const int64_t query_stride = query.stride(0);  // query may be a slice of a fused projection's rows
  const int64_t token_stride = num_kv_heads * head_size, block_stride = block_size * token_stride;
  const scalar_t* query_data = query.data_ptr<scalar_t>();
  scalar_t* output_data = output.data_ptr<scalar_t>();
  const int64_t* start_data = query_start.data_ptr<int64_t>();
  const int64_t* len_data = query_lens.data_ptr<int64_t>();
  const int32_t* table_data = block_tables.data_ptr<int32_t>();
  const int32_t* seq_len_data = seq_lens.data_ptr<int32_t>();
  const float query_scale = static_cast<float>(scale * k_scale), value_scale = static_cast<float>(v_scale);

  std::vector<Task> tasks;
  for (int64_t chunk = 0; chunk < num_chunks; ++chunk) {
    const int64_t context = seq_len_data[chunk] - len_data[chunk];
    for (int64_t first = 0; first < len_data[chunk]; first += kQueryTile) {
      const int64_t count = std::min(kQueryTile, len_data[chunk] - first);
      for (int64_t kv_head = 0; kv_head < num_kv_heads; ++kv_head) {
        tasks.push_back({chunk, kv_head, first, count, count * (context + first + count)});
      }
    }
  }
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.cost > b.cost; });

  const int64_t max_rows = (kQueryTile * group_size + kScoreRows - 1) / kScoreRows * kScoreRows;
  std::atomic<size_t> next_task{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    std::vector<float> queries(max_rows * head_size), outputs(max_rows * head_size), scores(max_rows * kKeyTile);
    std::vector<float> keys_t(head_size * kKeyTile), key_scratch(head_size), value_scratch(kKeyTile * head_size);
    std::vector<float> maxima(max_rows), sums(max_rows);
    std::vector<const float*> values(kKeyTile);
    for (size_t index; (index = next_task.fetch_add(1)) < tasks.size();) {
      const Task& task = tasks[index];
      const int64_t context = seq_len_data[task.chunk] - len_data[task.chunk];
      const int64_t first_token = start_data[task.chunk] + task.first;
      const int64_t rows = task.count * group_size;
      const int64_t padded_rows = (rows + kScoreRows - 1) / kScoreRows * kScoreRows;
      const int32_t* block_table = table_data + task.chunk * max_blocks;

      // Row r is query head kv_head * group_size + r % group_size at position first + r / group_size.
      for (int64_t r = 0; r < rows; ++r) {
        const scalar_t* source = query_data + (first_token + r / group_size) * query_stride +
                                 (task.kv_head * group_size + r % group_size) * head_size;
        for (int64_t d = 0; d < head_size; ++d) queries[r * head_size + d] = static_cast<float>(source[d]) * query_scale;
      }
      std::fill(queries.begin() + rows * head_size, queries.begin() + padded_rows * head_size, 0.f);
      std::fill(outputs.begin(), outputs.begin() + padded_rows * head_size, 0.f);
      std::fill(maxima.begin(), maxima.end(), -std::numeric_limits<float>::infinity());
      std::fill(sums.begin(), sums.end(), 0.f);

      const int64_t end = context + task.first + task.count;  // keys the task's last position sees
      for (int64_t tile = 0; tile < end; tile += kKeyTile) {
        const int64_t count = std::min(kKeyTile, end - tile);
        for (int64_t j = 0; j < count; ++j) {
          const int64_t position = tile + j;
          const int64_t offset = block_table[position / block_size] * block_stride +
                                 (position % block_size) * token_stride + task.kv_head * head_size;
          const float* key = key_rows.floats(offset, head_size, key_scratch.data());
          for (int64_t d = 0; d < head_size; ++d) keys_t[d * kKeyTile + j] = key[d];
          values[j] = value_rows.floats(offset, head_size, value_scratch.data() + j * head_size);
        }
        for (int64_t j = count; j < kKeyTile; ++j) {
          for (int64_t d = 0; d < head_size; ++d) keys_t[d * kKeyTile + j] = 0.f;
        }
        score_tile(queries.data(), keys_t.data(), padded_rows, head_size, scores.data());
        for (int64_t r = 0; r < padded_rows; ++r) {
          // Position p sees keys 0 .. p; padding rows see none.
          const int64_t visible = r < rows ? std::min(count, context + task.first + r / group_size + 1 - tile) : 0;
          softmax_step(scores.data() + r * kKeyTile, visible, maxima[r], sums[r], outputs.data() + r * head_size,
                       head_size);
        }
        for (int64_t r = 0; r < padded_rows; r += kValueRows) {
          add_weighted_rows<L, kValueRows>(scores.data() + r * kKeyTile, kKeyTile, values.data(), count, head_size,
                                           outputs.data() + r * head_size, 0);
        }
      }

      for (int64_t r = 0; r < rows; ++r) {
        scalar_t* out = output_data + (first_token + r / group_size) * num_heads * head_size +
                        (task.kv_head * group_size + r % group_size) * head_size;
        const float normaliser = value_scale / sums[r];
        for (int64_t d = 0; d < head_size; ++d) out[d] = static_cast<scalar_t>(outputs[r * head_size + d] * normaliser);
      }
    }
  });
}

}  // namespace

// Fills output's rows of every chunk; every other row of output is left as is. k_scale and v_scale multiply an fp8
// cache's keys and values (1.0 for a cache in the model's dtype).
void chunk_attention(torch::Tensor output, torch::Tensor query, torch::Tensor key_cache, torch::Tensor value_cache,
                     torch::Tensor query_start, torch::Tensor query_lens, torch::Tensor block_tables,
                     torch::Tensor seq_lens, double scale, double k_scale, double v_scale) {
  check_attention_tensors(output, query, key_cache, value_cache);
  TORCH_CHECK(query_start.scalar_type() == at::kLong && query_lens.scalar_type() == at::kLong,
              "query_start and query_lens must be int64");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && seq_lens.scalar_type() == at::kInt,
              "block_tables and seq_lens must be int32");
  TORCH_CHECK(query_start.is_contiguous() && query_lens.is_contiguous() && block_tables.is_contiguous() &&
                  seq_lens.is_contiguous(),
              "index tensors must be contiguous");
  TORCH_CHECK(query_lens.size(0) == query_start.size(0) && seq_lens.size(0) == query_start.size(0) &&
                  block_tables.size(0) == query_start.size(0),
              "query_start, query_lens, seq_lens and block_tables must have a row per chunk");
  const int64_t capacity = block_tables.size(1) * key_cache.size(1);
  for (int64_t chunk = 0; chunk < query_start.size(0); ++chunk) {
    const int64_t start = query_start.data_ptr<int64_t>()[chunk], len = query_lens.data_ptr<int64_t>()[chunk];
    const int64_t seq_len = seq_lens.data_ptr<int32_t>()[chunk];
    TORCH_CHECK(len >= 1 && start >= 0 && start + len <= query.size(0), "chunk ", chunk, " (rows ", start, " + ",
                len, ") is outside the query's ", query.size(0), " rows");
    TORCH_CHECK(len <= seq_len && seq_len <= capacity, "chunk ", chunk, ": ", len, " new tokens of a ", seq_len,
                "-token sequence in ", capacity, " slots of blocks");
  }
  PAGED_ATTENTION_DISPATCH(query.scalar_type(), "chunk_attention", [&] {
    with_cache_rows<scalar_t>(key_cache, value_cache, k_scale, v_scale, [&](auto keys, auto values, double key_scale,
                                                                            double value_scale) {
      chunk_attention_kernel<scalar_t>(output, query, keys, values, key_cache, query_start, query_lens, block_tables,
                                       seq_lens, scale, key_scale, value_scale);
    });
  });
}
