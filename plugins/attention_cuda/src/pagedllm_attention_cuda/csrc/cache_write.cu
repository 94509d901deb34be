// reshape_and_cache: scatter a step's new keys and values into their slots of the paged cache.

#include "common.cuh"

namespace pagedllm {
namespace {

constexpr int kCacheWriteThreads = 128;

// One thread block per token; threads stride over its num_kv_heads * head_size elements.
template <typename input_t, typename cache_t>
__global__ void __launch_bounds__(kCacheWriteThreads) reshape_and_cache_kernel(CacheWriteParams params) {
  const int token = blockIdx.x;
  const int64_t slot = params.slot_mapping[token];
  if (slot < 0) return;
  const CacheLayout& cache = params.cache;
  const int64_t slot_offset =
      (slot / cache.block_size) * cache.block_stride() + (slot % cache.block_size) * cache.slot_stride();
  const auto* key = static_cast<const input_t*>(params.key);
  const auto* value = static_cast<const input_t*>(params.value);
  auto* key_cache = static_cast<cache_t*>(params.key_cache);
  auto* value_cache = static_cast<cache_t*>(params.value_cache);
  const int num_elements = cache.num_kv_heads * cache.head_size;
  for (int i = threadIdx.x; i < num_elements; i += blockDim.x) {
    const int head = i / cache.head_size;
    const int dim = i % cache.head_size;
    const int64_t destination = slot_offset + i;
    key_cache[destination] =
        from_float<cache_t>(to_float(key[token * params.key_stride_token + head * params.key_stride_head + dim]));
    value_cache[destination] =
        from_float<cache_t>(to_float(value[token * params.value_stride_token + head * params.value_stride_head + dim]));
  }
}

}  // namespace

cudaError_t launch_reshape_and_cache(const CacheWriteParams& params, cudaStream_t stream) {
  if (params.num_tokens == 0) return cudaSuccess;
  const bool launched = dispatch_dtype(params.input_dtype, [&](auto input_zero) {
    return dispatch_dtype(params.cache_dtype, [&](auto cache_zero) {
      using input_t = decltype(input_zero);
      using cache_t = decltype(cache_zero);
      reshape_and_cache_kernel<input_t, cache_t><<<params.num_tokens, kCacheWriteThreads, 0, stream>>>(params);
      return true;
    });
  });
  return launched ? cudaGetLastError() : cudaErrorInvalidValue;
}

}  // namespace pagedllm
