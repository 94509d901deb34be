// The kernels of the cpu attention backend, as bindings.cpp exposes them.

#pragma once

#include <torch/extension.h>

// Paged attention of decode rows (paged_decode.cpp): each row token_index[i] of query attends to the first
// seq_lens[i] positions of the sequence whose blocks block_tables[i] lists.
void paged_decode(torch::Tensor output, torch::Tensor query, torch::Tensor key_cache, torch::Tensor value_cache,
                  torch::Tensor token_index, torch::Tensor block_tables, torch::Tensor seq_lens, double scale,
                  double k_scale, double v_scale);

// Causal paged attention of prompt chunks (chunk_attention.cpp): chunk i is query's rows query_start[i] ..
// query_start[i] + query_lens[i], the last positions of a sequence of seq_lens[i] tokens in block_tables[i].
void chunk_attention(torch::Tensor output, torch::Tensor query, torch::Tensor key_cache, torch::Tensor value_cache,
                     torch::Tensor query_start, torch::Tensor query_lens, torch::Tensor block_tables,
                     torch::Tensor seq_lens, double scale, double k_scale, double v_scale);

// Stores a step's keys and values in their cache slots (paged_decode.cpp).
void write_kv_cache(torch::Tensor key, torch::Tensor value, torch::Tensor key_cache, torch::Tensor value_cache,
                    torch::Tensor slot_mapping, double k_scale, double v_scale);

// A decode step's cache write and attention in one call, for the decoder program (paged_decode.cpp).
torch::Tensor decode_attention(torch::Tensor query, torch::Tensor key, torch::Tensor value, torch::Tensor kv_cache,
                               torch::Tensor k_scale, torch::Tensor v_scale, torch::Tensor slot_mapping,
                               torch::Tensor token_index, torch::Tensor block_tables, torch::Tensor seq_lens,
                               double scale);
