// Python bindings: check tensors, fill the launchers' parameter structs, launch on torch's stream.

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "pagedllm_cuda.h"

namespace pagedllm {
namespace {

DType dtype_of(const at::Tensor& tensor) {
  switch (tensor.scalar_type()) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      TORCH_CHECK(false, "dtype ", tensor.scalar_type(), " unsupported (float32, float16, bfloat16 are)");
  }
}

void check_cuda(const at::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.is_cuda(), name, " must be a CUDA tensor");
}

// Rows of [num_tokens, heads, head_size] with unit stride in the last dimension, as the kernels read them.
at::Tensor with_unit_last_stride(const at::Tensor& tensor) {
  return tensor.stride(-1) == 1 && tensor.stride(-2) % 2 == 0 && tensor.stride(0) % 2 == 0 ? tensor
                                                                                             : tensor.contiguous();
}

CacheLayout layout_of(const at::Tensor& kv_cache) {
  TORCH_CHECK(kv_cache.dim() == 5 && kv_cache.size(0) == 2,
              "kv_cache must be [2, num_blocks, block_size, num_kv_heads, head_size]");
  TORCH_CHECK(kv_cache.is_contiguous(), "kv_cache must be contiguous");
  return CacheLayout{int(kv_cache.size(2)), int(kv_cache.size(3)), int(kv_cache.size(4))};
}

void check_launch(cudaError_t error, const char* what) {
  TORCH_CHECK(error == cudaSuccess, what, " failed: ", cudaGetErrorString(error));
}

void check_head_size(int head_size) {
  for (const int supported : kSupportedHeadSizes) {
    if (head_size == supported) return;
  }
  TORCH_CHECK(false, "head size ", head_size, " unsupported (64, 80, 96, 128, 256 are)");
}

AttentionParams attention_params(const at::Tensor& output, const at::Tensor& query, const at::Tensor& kv_cache,
                                 const at::Tensor& block_tables, const at::Tensor& seq_lens, double scale) {
  check_cuda(query, "query");
  check_cuda(kv_cache, "kv_cache");
  TORCH_CHECK(query.scalar_type() == kv_cache.scalar_type(), "query dtype ", query.scalar_type(),
              " differs from the cache's ", kv_cache.scalar_type());
  TORCH_CHECK(output.is_contiguous() && output.sizes() == query.sizes() && output.scalar_type() == query.scalar_type(),
              "output must be a contiguous tensor shaped and typed like query");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && block_tables.stride(1) == 1,
              "block_tables must be int32 with unit stride in its last dimension");
  TORCH_CHECK(seq_lens.scalar_type() == at::kInt && seq_lens.is_contiguous(), "seq_lens must be contiguous int32");
  const CacheLayout cache = layout_of(kv_cache);
  TORCH_CHECK(query.size(2) == cache.head_size, "query head size ", query.size(2), " differs from the cache's ",
              cache.head_size);
  check_head_size(cache.head_size);
  TORCH_CHECK(query.size(1) % cache.num_kv_heads == 0, query.size(1), " query heads do not divide into ",
              cache.num_kv_heads, " KV heads");
  AttentionParams params{};
  params.output = output.data_ptr();
  params.query = query.data_ptr();
  params.key_cache = kv_cache[0].data_ptr();
  params.value_cache = kv_cache[1].data_ptr();
  params.block_tables = block_tables.data_ptr<int32_t>();
  params.seq_lens = seq_lens.data_ptr<int32_t>();
  params.num_seqs = int(seq_lens.size(0));
  params.num_heads = int(query.size(1));
  params.block_table_stride = block_tables.stride(0);
  params.query_stride_token = query.stride(0);
  params.query_stride_head = query.stride(1);
  params.cache = cache;
  params.scale = float(scale);
  params.dtype = dtype_of(query);
  return params;
}

void reshape_and_cache(const at::Tensor& key, const at::Tensor& value, const at::Tensor& kv_cache,
                       const at::Tensor& slot_mapping) {
  check_cuda(key, "key");
  check_cuda(kv_cache, "kv_cache");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.is_contiguous(),
              "slot_mapping must be contiguous int64");
  const c10::cuda::CUDAGuard guard(kv_cache.device());
  const at::Tensor key_rows = key.stride(-1) == 1 ? key : key.contiguous();
  const at::Tensor value_rows = value.stride(-1) == 1 ? value : value.contiguous();
  TORCH_CHECK(key_rows.scalar_type() == value_rows.scalar_type(), "key and value dtypes differ");
  CacheWriteParams params{};
  params.key = key_rows.data_ptr();
  params.value = value_rows.data_ptr();
  params.key_cache = kv_cache[0].data_ptr();
  params.value_cache = kv_cache[1].data_ptr();
  params.slot_mapping = slot_mapping.data_ptr<int64_t>();
  params.num_tokens = int(slot_mapping.size(0));
  params.key_stride_token = key_rows.stride(0);
  params.key_stride_head = key_rows.stride(1);
  params.value_stride_token = value_rows.stride(0);
  params.value_stride_head = value_rows.stride(1);
  params.cache = layout_of(kv_cache);
  params.input_dtype = dtype_of(key_rows);
  params.cache_dtype = dtype_of(kv_cache);
  check_launch(launch_reshape_and_cache(params, c10::cuda::getCurrentCUDAStream()), "reshape_and_cache");
}

at::Tensor paged_decode(const at::Tensor& query, const at::Tensor& kv_cache, const at::Tensor& block_tables,
                        const at::Tensor& seq_lens, double scale, int64_t partition_size, int64_t num_partitions) {
  const c10::cuda::CUDAGuard guard(query.device());
  const at::Tensor query_rows = with_unit_last_stride(query);
  at::Tensor output = at::empty(query_rows.sizes(), query_rows.options());
  TORCH_CHECK(query_rows.size(0) == seq_lens.size(0), "decode takes one query token per sequence");
  TORCH_CHECK(partition_size > 0 && num_partitions > 0, "partition_size and num_partitions must be positive");
  const AttentionParams params = attention_params(output, query_rows, kv_cache, block_tables, seq_lens, scale);
  DecodePartitions partitions{};
  partitions.partition_size = int(partition_size);
  partitions.num_partitions = int(num_partitions);
  at::Tensor partial_output, partial_max, partial_sum;
  if (num_partitions > 1) {
    const auto options = query_rows.options().dtype(at::kFloat);
    partial_output = at::empty({params.num_seqs, params.num_heads, num_partitions, params.cache.head_size}, options);
    partial_max = at::empty({params.num_seqs, params.num_heads, num_partitions}, options);
    partial_sum = at::empty({params.num_seqs, params.num_heads, num_partitions}, options);
    partitions.partial_output = partial_output.data_ptr<float>();
    partitions.partial_max = partial_max.data_ptr<float>();
    partitions.partial_sum = partial_sum.data_ptr<float>();
  }
  check_launch(launch_paged_decode(params, partitions, c10::cuda::getCurrentCUDAStream()), "paged_decode");
  return output;
}

at::Tensor paged_prefill(const at::Tensor& query, const at::Tensor& kv_cache, const at::Tensor& block_tables,
                         const at::Tensor& seq_lens, const at::Tensor& query_start_loc, double scale,
                         int64_t max_query_len) {
  const c10::cuda::CUDAGuard guard(query.device());
  const at::Tensor query_rows = with_unit_last_stride(query);
  at::Tensor output = at::empty(query_rows.sizes(), query_rows.options());
  TORCH_CHECK(query_start_loc.scalar_type() == at::kInt && query_start_loc.is_contiguous() &&
                  query_start_loc.size(0) == seq_lens.size(0) + 1,
              "query_start_loc must be contiguous int32 of num_seqs + 1 entries");
  AttentionParams params = attention_params(output, query_rows, kv_cache, block_tables, seq_lens, scale);
  params.query_start_loc = query_start_loc.data_ptr<int32_t>();
  check_launch(launch_paged_prefill(params, int(max_query_len), c10::cuda::getCurrentCUDAStream()), "paged_prefill");
  return output;
}

}  // namespace
}  // namespace pagedllm

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "pagedllm's CUDA paged attention kernels";
  module.def("reshape_and_cache", &pagedllm::reshape_and_cache,
             "write key/value [num_tokens, num_kv_heads, head_size] into kv_cache at slot_mapping");
  module.def("paged_decode", &pagedllm::paged_decode,
             "decode attention (one query token per sequence), split into partitions of the context");
  module.def("paged_prefill", &pagedllm::paged_prefill,
             "causal attention of each sequence's new tokens over its paged context");
}
