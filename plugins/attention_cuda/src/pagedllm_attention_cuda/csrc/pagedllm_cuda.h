// The kernels' host-side interface: plain structs and launchers, free of torch headers so that the
// .cu files compile with nvcc alone (bindings.cpp is the one file that sees torch).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace pagedllm {

enum class DType { kFloat32, kFloat16, kBFloat16 };

// One layer's paged cache is [2, num_blocks, block_size, num_kv_heads, head_size], contiguous.
struct CacheLayout {
  int block_size;
  int num_kv_heads;
  int head_size;

  __host__ __device__ int64_t slot_stride() const { return int64_t(num_kv_heads) * head_size; }
  __host__ __device__ int64_t block_stride() const { return int64_t(block_size) * slot_stride(); }
};

// cache[slot_mapping[t]] = key[t] / value[t] for every token t (reshape_and_cache). A negative slot
// marks a padding token that is skipped.
struct CacheWriteParams {
  const void* key;    // [num_tokens, num_kv_heads, head_size], unit stride in the last dimension
  const void* value;  // likewise
  void* key_cache;    // kv_cache[0]
  void* value_cache;  // kv_cache[1]
  const int64_t* slot_mapping;  // [num_tokens]
  int num_tokens;
  int64_t key_stride_token, key_stride_head;
  int64_t value_stride_token, value_stride_head;
  CacheLayout cache;
  DType input_dtype;
  DType cache_dtype;
};

// Attention of a step's queries over their sequences' paged context (the cache write already done).
struct AttentionParams {
  void* output;        // [num_tokens, num_heads, head_size], contiguous
  const void* query;   // [num_tokens, num_heads, head_size], unit stride in the last dimension
  const void* key_cache;
  const void* value_cache;
  const int32_t* block_tables;     // [num_seqs, block_table_stride]
  const int32_t* seq_lens;         // [num_seqs]
  const int32_t* query_start_loc;  // [num_seqs + 1]; only prefill reads it
  int num_seqs;
  int num_heads;
  int64_t block_table_stride;
  int64_t query_stride_token, query_stride_head;
  CacheLayout cache;
  float scale;
  DType dtype;  // of query, output and cache alike
};

// Decode (one query token per sequence, token i of sequence i), PagedAttention V2: the context is
// cut into partitions of partition_size positions, each attended by its own thread block; when
// there is more than one, a reduce kernel merges the partial results through the scratch buffers.
struct DecodePartitions {
  int partition_size;
  int num_partitions;     // for the longest sequence; shorter ones leave the later ones empty
  float* partial_output;  // [num_seqs, num_heads, num_partitions, head_size]; unused when num_partitions == 1
  float* partial_max;     // [num_seqs, num_heads, num_partitions]
  float* partial_sum;     // [num_seqs, num_heads, num_partitions]
};

// Each launcher returns cudaErrorInvalidValue for a dtype or head size it has no kernel for (the
// bindings check both first), else the launch's own error.
cudaError_t launch_reshape_and_cache(const CacheWriteParams& params, cudaStream_t stream);
cudaError_t launch_paged_decode(const AttentionParams& params, const DecodePartitions& partitions,
                                cudaStream_t stream);
// Prefill and mixed steps: any number of query tokens per sequence, causal within the sequence.
cudaError_t launch_paged_prefill(const AttentionParams& params, int max_query_len, cudaStream_t stream);

// The head sizes every attention kernel is instantiated for.
constexpr int kSupportedHeadSizes[] = {64, 80, 96, 128, 256};

}  // namespace pagedllm
