// Device helpers shared by the kernels: dtype conversion, warp reductions, and the host-side
// dispatch from runtime dtype and head size to template instantiations.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "pagedllm_cuda.h"

namespace pagedllm {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
// The default per-block shared memory; more needs an explicit opt-in per kernel.
constexpr size_t kDefaultSharedMemoryBytes = 48 * 1024;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Two adjacent elements at an even element offset (head sizes are even, so rows stay aligned).
__device__ __forceinline__ float2 load_pair(const float* p) { return *reinterpret_cast<const float2*>(p); }
__device__ __forceinline__ float2 load_pair(const __half* p) {
  return __half22float2(*reinterpret_cast<const __half2*>(p));
}
__device__ __forceinline__ float2 load_pair(const __nv_bfloat16* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(kFullMask, x, offset);
  return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, offset));
  return x;
}

// The context slot (as an element offset into one head's cache) of a sequence's position.
__device__ __forceinline__ int64_t cache_offset(const int32_t* block_table, int position, const CacheLayout& cache) {
  const int64_t block = block_table[position / cache.block_size];
  return block * cache.block_stride() + int64_t(position % cache.block_size) * cache.slot_stride();
}

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Calls fn(T{}) with the element type of dtype; returns fn's result.
template <typename Fn>
bool dispatch_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32:
      return fn(float{});
    case DType::kFloat16:
      return fn(__half{});
    case DType::kBFloat16:
      return fn(__nv_bfloat16{});
  }
  return false;
}

// Calls fn(std::integral_constant<int, head_size>{}); false for a head size with no instantiation.
template <typename Fn>
bool dispatch_head_size(int head_size, Fn&& fn) {
  switch (head_size) {
    case 64:
      return fn(std::integral_constant<int, 64>{});
    case 80:
      return fn(std::integral_constant<int, 80>{});
    case 96:
      return fn(std::integral_constant<int, 96>{});
    case 128:
      return fn(std::integral_constant<int, 128>{});
    case 256:
      return fn(std::integral_constant<int, 256>{});
  }
  return false;
}

// Lets kernel use `bytes` of dynamic shared memory (a no-op below the default limit).
template <typename Kernel>
cudaError_t allow_shared_memory(Kernel kernel, size_t bytes) {
  if (bytes <= kDefaultSharedMemoryBytes) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
}

}  // namespace pagedllm
