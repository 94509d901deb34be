// A decode step of a Llama-style model in one C++ call (decoder_program.cpp).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/extension.h>

#include <initializer_list>
#include <string>
#include <vector>

// A registered torch operator together with the arguments a layer always passes it: it is called as
// operator(*inputs, *bound arguments, *step arguments), through torch's dispatcher, with no Python.
class BoundOperator {
 public:
  // native_op: a pagedllm_core.model.native_op.NativeOp (its `operator`, "namespace::name[.overload]",
  // and its `arguments`, converted by the operator's schema after its first `num_inputs` arguments).
  BoundOperator(const pybind11::handle& native_op, size_t num_inputs);

  // The arguments that follow the bound ones in a step (the attention's per-step arguments), converted.
  std::vector<c10::IValue> step_arguments(const pybind11::tuple& arguments) const;

  torch::Tensor operator()(std::initializer_list<torch::Tensor> inputs,
                           const std::vector<c10::IValue>& step_arguments = {}) const;

 private:
  c10::OperatorHandle operator_;
  std::vector<c10::IValue> arguments_;
  size_t num_inputs_;
};

// The decoder layers of Llama, Mistral and Qwen2 (pre-norm attention and gated MLP blocks) and the final
// norm, run over a decode step's hidden states: the same kernels, in the same order, as the layers' Python.
class LlamaDecoderProgram {
 public:
  LlamaDecoderProgram(int64_t num_heads, int64_t num_kv_heads, int64_t head_size, double eps,
                      int64_t silu_vector_block, torch::Tensor final_norm);

  // Appends a layer. qkv, o_proj, gate_up and down are NativeOps called with the rows they project;
  // attention is called as attention(query, key, value, kv_cache, *its arguments, *the step's arguments).
  void add_layer(torch::Tensor input_norm, torch::Tensor post_attention_norm, const pybind11::handle& qkv,
                 const pybind11::handle& o_proj, const pybind11::handle& gate_up, const pybind11::handle& down,
                 const pybind11::handle& attention);

  // hidden: the step's embedded tokens [tokens, hidden_size] (updated in place: it becomes the residual);
  // cos, sin: the rotary embedding's [tokens, 1, head_size] -> the final norm's output [tokens, hidden_size].
  torch::Tensor run(torch::Tensor hidden, const torch::Tensor& cos, const torch::Tensor& sin,
                    const std::vector<torch::Tensor>& kv_caches, const pybind11::tuple& step_arguments) const;

  size_t num_layers() const { return layers_.size(); }

 private:
  struct Layer {
    torch::Tensor input_norm, post_attention_norm;
    BoundOperator qkv, o_proj, gate_up, down, attention;
  };

  torch::Tensor run_layers(torch::Tensor residual, const torch::Tensor& cos, const torch::Tensor& sin,
                           const std::vector<torch::Tensor>& kv_caches,
                           const std::vector<c10::IValue>& step_arguments) const;

  int64_t num_heads_, num_kv_heads_, head_size_;
  double eps_;
  int64_t silu_vector_block_;
  torch::Tensor final_norm_;
  std::vector<Layer> layers_;
};
