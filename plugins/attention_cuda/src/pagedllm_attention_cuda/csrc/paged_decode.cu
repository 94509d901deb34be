// Paged decode attention in the PagedAttention V2 shape: one thread block per (sequence, KV head,
// group of query heads, context partition), then a reduce kernel that merges the partitions.

#include <cmath>

#include "common.cuh"

namespace pagedllm {
namespace {

constexpr int kDecodeThreads = 128;
constexpr int kDecodeWarps = kDecodeThreads / kWarpSize;
// Query heads sharing a KV head are attended by one block, so each key and value is read once for
// up to this many of them; larger groups are split over several blocks.
constexpr int kMaxGroupRows = 8;
constexpr int kReduceThreads = 128;
// Positions a warp loads before it uses any of them, so that several loads are in flight per warp.
constexpr int kRowsInFlight = 4;

template <int HEAD_SIZE>
constexpr int pairs_per_lane() {
  return ceil_div(HEAD_SIZE / 2, kWarpSize);
}

// This lane's pairs of the key (or value) rows of positions first .. first + kRowsInFlight - 1 of the
// partition; zeros past its end.
template <typename scalar_t, int HEAD_SIZE>
__device__ __forceinline__ void load_rows(float2 (&rows)[kRowsInFlight][pairs_per_lane<HEAD_SIZE>()],
                                          const scalar_t* cache, const int32_t* block_table, int context_start,
                                          int first, int num_context, const CacheLayout& layout, int lane) {
#pragma unroll
  for (int u = 0; u < kRowsInFlight; ++u) {
    const bool in_partition = first + u < num_context;
    const scalar_t* row = in_partition ? cache + cache_offset(block_table, context_start + first + u, layout) : cache;
#pragma unroll
    for (int i = 0; i < pairs_per_lane<HEAD_SIZE>(); ++i) {
      const int pair = lane + i * kWarpSize;
      rows[u][i] = in_partition && pair < HEAD_SIZE / 2 ? load_pair(row + 2 * pair) : make_float2(0.f, 0.f);
    }
  }
}

__host__ __device__ int num_row_chunks(const AttentionParams& params) {
  return ceil_div(params.num_heads / params.cache.num_kv_heads, kMaxGroupRows);
}

// Shared memory: the scaled query rows and the output accumulator ([kMaxGroupRows, HEAD_SIZE] each),
// then [num_rows, partition_size] scores, overwritten by their softmax numerators.
template <int HEAD_SIZE>
size_t decode_shared_memory_bytes(const AttentionParams& params, int partition_size) {
  const int group_size = params.num_heads / params.cache.num_kv_heads;
  const int num_rows = group_size < kMaxGroupRows ? group_size : kMaxGroupRows;
  return sizeof(float) * (2 * kMaxGroupRows * HEAD_SIZE + size_t(num_rows) * partition_size);
}

template <typename scalar_t, int HEAD_SIZE>
__global__ void __launch_bounds__(kDecodeThreads)
    paged_decode_kernel(AttentionParams params, DecodePartitions partitions) {
  constexpr int kPairs = HEAD_SIZE / 2;
  constexpr int kPairsPerLane = pairs_per_lane<HEAD_SIZE>();

  const int seq = blockIdx.x;
  const int kv_head = blockIdx.y / num_row_chunks(params);
  const int row_chunk = blockIdx.y % num_row_chunks(params);
  const int partition = blockIdx.z;
  const int seq_len = params.seq_lens[seq];
  const int context_start = partition * partitions.partition_size;
  if (context_start >= seq_len) return;
  const int num_context = min(partitions.partition_size, seq_len - context_start);
  const int group_size = params.num_heads / params.cache.num_kv_heads;
  const int first_row = row_chunk * kMaxGroupRows;
  const int num_rows = min(kMaxGroupRows, group_size - first_row);
  const int first_head = kv_head * group_size + first_row;

  extern __shared__ float shared[];
  float* query_rows = shared;
  float* output_rows = query_rows + kMaxGroupRows * HEAD_SIZE;
  float* scores = output_rows + kMaxGroupRows * HEAD_SIZE;
  __shared__ float row_max[kMaxGroupRows];
  __shared__ float row_sum[kMaxGroupRows];

  const auto* query = static_cast<const scalar_t*>(params.query);
  for (int i = threadIdx.x; i < kMaxGroupRows * HEAD_SIZE; i += blockDim.x) {
    const int row = i / HEAD_SIZE;
    float value = 0.f;
    if (row < num_rows) {
      value = to_float(query[seq * params.query_stride_token + (first_head + row) * params.query_stride_head +
                             i % HEAD_SIZE]) * params.scale;
    }
    query_rows[i] = value;
    output_rows[i] = 0.f;
  }
  __syncthreads();

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int32_t* block_table = params.block_tables + seq * params.block_table_stride;
  const int64_t head_offset = int64_t(kv_head) * HEAD_SIZE;
  const auto* key_cache = static_cast<const scalar_t*>(params.key_cache) + head_offset;
  const auto* value_cache = static_cast<const scalar_t*>(params.value_cache) + head_offset;

  // Scores: a warp takes kRowsInFlight keys at a time; its lanes read each key's dims in pairs and
  // reduce each query row's dot product with shuffles.
  for (int first = warp * kRowsInFlight; first < num_context; first += kDecodeWarps * kRowsInFlight) {
    float2 keys[kRowsInFlight][kPairsPerLane];
    load_rows<scalar_t, HEAD_SIZE>(keys, key_cache, block_table, context_start, first, num_context, params.cache,
                                   lane);
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u) {
      const int t = first + u;
      if (t >= num_context) break;  // the same for the whole warp
      float partial[kMaxGroupRows] = {};
#pragma unroll
      for (int i = 0; i < kPairsPerLane; ++i) {
        const int pair = lane + i * kWarpSize;
        if (pair < kPairs) {
#pragma unroll
          for (int row = 0; row < kMaxGroupRows; ++row) {
            const float2 q = reinterpret_cast<const float2*>(query_rows + row * HEAD_SIZE)[pair];
            partial[row] += q.x * keys[u][i].x + q.y * keys[u][i].y;
          }
        }
      }
#pragma unroll
      for (int row = 0; row < kMaxGroupRows; ++row) {
        if (row < num_rows) {
          const float score = warp_sum(partial[row]);
          if (lane == 0) scores[row * partitions.partition_size + t] = score;
        }
      }
    }
  }
  __syncthreads();

  // Softmax over the partition: a warp per query row.
  for (int row = warp; row < num_rows; row += kDecodeWarps) {
    float* row_scores = scores + row * partitions.partition_size;
    float max_score = -INFINITY;
    for (int t = lane; t < num_context; t += kWarpSize) max_score = fmaxf(max_score, row_scores[t]);
    max_score = warp_max(max_score);
    float sum = 0.f;
    for (int t = lane; t < num_context; t += kWarpSize) {
      const float numerator = expf(row_scores[t] - max_score);
      row_scores[t] = numerator;
      sum += numerator;
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      row_max[row] = max_score;
      row_sum[row] = sum;
    }
  }
  __syncthreads();

  // Weighted values: the same positions per warp as the scores, each lane owning the same dims; the
  // warps then add their partial rows into shared memory.
  float accumulator[kMaxGroupRows][2 * kPairsPerLane] = {};
  for (int first = warp * kRowsInFlight; first < num_context; first += kDecodeWarps * kRowsInFlight) {
    float2 values[kRowsInFlight][kPairsPerLane];
    load_rows<scalar_t, HEAD_SIZE>(values, value_cache, block_table, context_start, first, num_context, params.cache,
                                   lane);
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u) {
      const int t = first + u;
      if (t >= num_context) break;
#pragma unroll
      for (int row = 0; row < kMaxGroupRows; ++row) {
        if (row < num_rows) {
          const float weight = scores[row * partitions.partition_size + t];
#pragma unroll
          for (int i = 0; i < kPairsPerLane; ++i) {
            accumulator[row][2 * i] += weight * values[u][i].x;
            accumulator[row][2 * i + 1] += weight * values[u][i].y;
          }
        }
      }
    }
  }
#pragma unroll
  for (int row = 0; row < kMaxGroupRows; ++row) {
    if (row < num_rows) {
#pragma unroll
      for (int i = 0; i < kPairsPerLane; ++i) {
        const int pair = lane + i * kWarpSize;
        if (pair < kPairs) {
          atomicAdd(&output_rows[row * HEAD_SIZE + 2 * pair], accumulator[row][2 * i]);
          atomicAdd(&output_rows[row * HEAD_SIZE + 2 * pair + 1], accumulator[row][2 * i + 1]);
        }
      }
    }
  }
  __syncthreads();

  auto* output = static_cast<scalar_t*>(params.output);
  for (int i = threadIdx.x; i < num_rows * HEAD_SIZE; i += blockDim.x) {
    const int row = i / HEAD_SIZE;
    const int dim = i % HEAD_SIZE;
    const int head = first_head + row;
    const float normalized = output_rows[i] / row_sum[row];
    if (partitions.num_partitions == 1) {
      output[(int64_t(seq) * params.num_heads + head) * HEAD_SIZE + dim] = from_float<scalar_t>(normalized);
    } else {
      const int64_t index = (int64_t(seq) * params.num_heads + head) * partitions.num_partitions + partition;
      partitions.partial_output[index * HEAD_SIZE + dim] = normalized;
      if (dim == 0) {
        partitions.partial_max[index] = row_max[row];
        partitions.partial_sum[index] = row_sum[row];
      }
    }
  }
}

// One block per (sequence, query head): each partition's normalised output weighs in with its share
// of the softmax denominator, sum_p * exp(max_p - max).
template <typename scalar_t, int HEAD_SIZE>
__global__ void __launch_bounds__(kReduceThreads)
    reduce_partitions_kernel(AttentionParams params, DecodePartitions partitions) {
  const int seq = blockIdx.x;
  const int head = blockIdx.y;
  const int num_used = ceil_div(params.seq_lens[seq], partitions.partition_size);
  const int64_t base = (int64_t(seq) * params.num_heads + head) * partitions.num_partitions;
  extern __shared__ float weights[];  // [num_partitions]

  float max_logit = -INFINITY;
  for (int p = 0; p < num_used; ++p) max_logit = fmaxf(max_logit, partitions.partial_max[base + p]);
  for (int p = threadIdx.x; p < num_used; p += blockDim.x) {
    weights[p] = partitions.partial_sum[base + p] * expf(partitions.partial_max[base + p] - max_logit);
  }
  __syncthreads();
  float total = 0.f;
  for (int p = 0; p < num_used; ++p) total += weights[p];

  auto* output = static_cast<scalar_t*>(params.output);
  for (int dim = threadIdx.x; dim < HEAD_SIZE; dim += blockDim.x) {
    float value = 0.f;
    for (int p = 0; p < num_used; ++p) value += weights[p] * partitions.partial_output[(base + p) * HEAD_SIZE + dim];
    output[(int64_t(seq) * params.num_heads + head) * HEAD_SIZE + dim] = from_float<scalar_t>(value / total);
  }
}

}  // namespace

cudaError_t launch_paged_decode(const AttentionParams& params, const DecodePartitions& partitions,
                                cudaStream_t stream) {
  if (params.num_seqs == 0) return cudaSuccess;
  cudaError_t error = cudaSuccess;
  const bool launched = dispatch_dtype(params.dtype, [&](auto zero) {
    return dispatch_head_size(params.cache.head_size, [&](auto head_size) {
      using scalar_t = decltype(zero);
      constexpr int kHeadSize = decltype(head_size)::value;
      const auto kernel = paged_decode_kernel<scalar_t, kHeadSize>;
      const size_t shared_bytes = decode_shared_memory_bytes<kHeadSize>(params, partitions.partition_size);
      error = allow_shared_memory(kernel, shared_bytes);
      if (error != cudaSuccess) return true;
      const dim3 grid(params.num_seqs, params.cache.num_kv_heads * num_row_chunks(params), partitions.num_partitions);
      kernel<<<grid, kDecodeThreads, shared_bytes, stream>>>(params, partitions);
      if (partitions.num_partitions > 1) {
        const dim3 reduce_grid(params.num_seqs, params.num_heads);
        reduce_partitions_kernel<scalar_t, kHeadSize>
            <<<reduce_grid, kReduceThreads, sizeof(float) * partitions.num_partitions, stream>>>(params, partitions);
      }
      error = cudaGetLastError();
      return true;
    });
  });
  return launched ? error : cudaErrorInvalidValue;
}

}  // namespace pagedllm
