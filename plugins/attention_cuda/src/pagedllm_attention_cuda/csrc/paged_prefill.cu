// Prefill and mixed steps over the paged cache, FlashAttention-style: a thread block takes a tile of
// one sequence's new query rows for one query head and walks key/value tiles of its context with an
// online softmax, so nothing of size context x context is ever stored.

#include <cmath>

#include "common.cuh"

namespace pagedllm {
namespace {

constexpr int kPrefillThreads = 128;
constexpr int kPrefillWarps = kPrefillThreads / kWarpSize;
constexpr int kRowsPerWarp = 4;
constexpr int kBlockM = kPrefillWarps * kRowsPerWarp;  // query rows per block
constexpr int kBlockN = kWarpSize;                     // context positions per tile: a lane per key

// Shared memory: the scaled query tile [kBlockM, HEAD_SIZE], then one key (or value) tile
// [kBlockN, HEAD_SIZE + 1], padded so that lanes reading different keys hit different banks.
template <int HEAD_SIZE>
constexpr size_t prefill_shared_memory_bytes() {
  return sizeof(float) * (kBlockM * HEAD_SIZE + kBlockN * (HEAD_SIZE + 1));
}

template <typename scalar_t, int HEAD_SIZE>
__device__ __forceinline__ void load_context_tile(float* tile, const scalar_t* cache, const int32_t* block_table,
                                                  int tile_start, int context_end, const CacheLayout& layout) {
  for (int i = threadIdx.x; i < kBlockN * HEAD_SIZE; i += blockDim.x) {
    const int key = i / HEAD_SIZE;
    const int dim = i % HEAD_SIZE;
    const int position = tile_start + key;
    float value = 0.f;
    if (position < context_end) value = to_float(cache[cache_offset(block_table, position, layout) + dim]);
    tile[key * (HEAD_SIZE + 1) + dim] = value;
  }
}

template <typename scalar_t, int HEAD_SIZE>
__global__ void __launch_bounds__(kPrefillThreads) paged_prefill_kernel(AttentionParams params) {
  constexpr int kDimsPerLane = ceil_div(HEAD_SIZE, kWarpSize);

  const int seq = blockIdx.x;
  const int query_tile_start = blockIdx.y * kBlockM;
  const int head = blockIdx.z;
  const int query_start = params.query_start_loc[seq];
  const int query_len = params.query_start_loc[seq + 1] - query_start;
  if (query_tile_start >= query_len) return;
  const int num_rows = min(kBlockM, query_len - query_tile_start);
  // Row r of the tile is the sequence's token at this position; it sees keys up to and including it.
  const int first_position = params.seq_lens[seq] - query_len + query_tile_start;
  const int context_end = first_position + num_rows;
  const int kv_head = head / (params.num_heads / params.cache.num_kv_heads);

  extern __shared__ float shared[];
  float* query_tile = shared;
  float* context_tile = query_tile + kBlockM * HEAD_SIZE;

  const auto* query = static_cast<const scalar_t*>(params.query);
  for (int i = threadIdx.x; i < kBlockM * HEAD_SIZE; i += blockDim.x) {
    const int row = i / HEAD_SIZE;
    float value = 0.f;
    if (row < num_rows) {
      const int64_t token = query_start + query_tile_start + row;
      value = to_float(query[token * params.query_stride_token + head * params.query_stride_head + i % HEAD_SIZE]) *
              params.scale;
    }
    query_tile[i] = value;
  }

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int first_row = warp * kRowsPerWarp;
  const int32_t* block_table = params.block_tables + seq * params.block_table_stride;
  const int64_t head_offset = int64_t(kv_head) * HEAD_SIZE;
  const auto* key_cache = static_cast<const scalar_t*>(params.key_cache) + head_offset;
  const auto* value_cache = static_cast<const scalar_t*>(params.value_cache) + head_offset;

  float accumulator[kRowsPerWarp][kDimsPerLane] = {};
  float running_max[kRowsPerWarp];
  float running_sum[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    running_max[r] = -INFINITY;
    running_sum[r] = 0.f;
  }

  for (int tile_start = 0; tile_start < context_end; tile_start += kBlockN) {
    __syncthreads();  // the query tile is stored / the previous value tile is consumed
    load_context_tile<scalar_t, HEAD_SIZE>(context_tile, key_cache, block_table, tile_start, context_end,
                                           params.cache);
    __syncthreads();

    float score[kRowsPerWarp] = {};
    for (int dim = 0; dim < HEAD_SIZE; ++dim) {
      const float key = context_tile[lane * (HEAD_SIZE + 1) + dim];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) score[r] += query_tile[(first_row + r) * HEAD_SIZE + dim] * key;
    }

    const int key_position = tile_start + lane;
    float probability[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const bool visible = first_row + r < num_rows && key_position <= first_position + first_row + r;
      const float masked = visible ? score[r] : -INFINITY;
      const float new_max = fmaxf(running_max[r], warp_max(masked));
      // A row that has seen no visible key keeps max -inf; shifting by 0 avoids inf - inf.
      const float shift = new_max == -INFINITY ? 0.f : new_max;
      probability[r] = expf(masked - shift);
      const float rescale = expf(running_max[r] - shift);
      running_sum[r] = running_sum[r] * rescale + warp_sum(probability[r]);
      running_max[r] = new_max;
#pragma unroll
      for (int i = 0; i < kDimsPerLane; ++i) accumulator[r][i] *= rescale;
    }

    __syncthreads();  // every warp is done with the keys
    load_context_tile<scalar_t, HEAD_SIZE>(context_tile, value_cache, block_table, tile_start, context_end,
                                           params.cache);
    __syncthreads();

    for (int key = 0; key < kBlockN; ++key) {
      float weight[kRowsPerWarp];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) weight[r] = __shfl_sync(kFullMask, probability[r], key);
#pragma unroll
      for (int i = 0; i < kDimsPerLane; ++i) {
        const int dim = lane + i * kWarpSize;
        if (dim < HEAD_SIZE) {
          const float value = context_tile[key * (HEAD_SIZE + 1) + dim];
#pragma unroll
          for (int r = 0; r < kRowsPerWarp; ++r) accumulator[r][i] += weight[r] * value;
        }
      }
    }
  }

  auto* output = static_cast<scalar_t*>(params.output);
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    if (first_row + r >= num_rows) continue;
    const int64_t token = query_start + query_tile_start + first_row + r;
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) {
      const int dim = lane + i * kWarpSize;
      if (dim < HEAD_SIZE) {
        output[(token * params.num_heads + head) * HEAD_SIZE + dim] =
            from_float<scalar_t>(accumulator[r][i] / running_sum[r]);
      }
    }
  }
}

}  // namespace

cudaError_t launch_paged_prefill(const AttentionParams& params, int max_query_len, cudaStream_t stream) {
  if (params.num_seqs == 0 || max_query_len == 0) return cudaSuccess;
  cudaError_t error = cudaSuccess;
  const bool launched = dispatch_dtype(params.dtype, [&](auto zero) {
    return dispatch_head_size(params.cache.head_size, [&](auto head_size) {
      using scalar_t = decltype(zero);
      constexpr int kHeadSize = decltype(head_size)::value;
      const auto kernel = paged_prefill_kernel<scalar_t, kHeadSize>;
      constexpr size_t shared_bytes = prefill_shared_memory_bytes<kHeadSize>();
      error = allow_shared_memory(kernel, shared_bytes);
      if (error != cudaSuccess) return true;
      const dim3 grid(params.num_seqs, ceil_div(max_query_len, kBlockM), params.num_heads);
      kernel<<<grid, kPrefillThreads, shared_bytes, stream>>>(params);
      error = cudaGetLastError();
      return true;
    });
  });
  return launched ? error : cudaErrorInvalidValue;
}

}  // namespace pagedllm
