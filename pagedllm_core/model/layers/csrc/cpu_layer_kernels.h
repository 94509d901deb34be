// The CPU kernels of the decoder layers on float32, bfloat16 or float16 rows (cpu_layer_kernels.cpp), for the
// Python bindings and the decoder program, which calls them without going through Python.
#pragma once

#include <torch/extension.h>

// RMSNorm of each row of x.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// residual += x (in place), then returns RMSNorm(residual).
torch::Tensor fused_add_rms_norm(const torch::Tensor& x, torch::Tensor& residual, const torch::Tensor& weight,
                                 double eps);

// x: [..., 2 * d] holding gate then up -> silu(gate) * up: [..., d].
torch::Tensor silu_and_mul(const torch::Tensor& x, int64_t vector_block);

// heads: [tokens, num_heads * head_size], cos = [c, c], sin = [-s, s]: [tokens, 1, head_size] -> rotated heads.
torch::Tensor rotate_heads(const torch::Tensor& heads, const torch::Tensor& cos, const torch::Tensor& sin);
