// A decode step of a Llama-style model in one C++ call. Layer by layer in Python, a step of one sequence
// spends about 60 microseconds per layer between its kernels (module calls, attribute lookups, views); here
// the same kernels run back to back. Projections and attention are whatever operators the model's layers
// and the attention backend registered with torch (NativeOp), so quantized layers and other backends take
// part through the dispatcher like the dense ones.
#include "decoder_program.h"

#include <torch/csrc/jit/python/pybind_utils.h>

#include "cpu_layer_kernels.h"

namespace py = pybind11;

namespace {

c10::OperatorHandle find_operator(const std::string& name) {
  const auto dot = name.find('.');
  const std::string base = name.substr(0, dot), overload = dot == std::string::npos ? "" : name.substr(dot + 1);
  return c10::Dispatcher::singleton().findSchemaOrThrow(base.c_str(), overload.c_str());
}

// Python values as the schema's arguments from `first` on.
std::vector<c10::IValue> schema_arguments(const c10::FunctionSchema& schema, size_t first, const py::tuple& values) {
  const auto& expected = schema.arguments();
  TORCH_CHECK(first + values.size() <= expected.size(), schema.name(), " takes ", expected.size(),
              " arguments, got ", first + values.size());
  std::vector<c10::IValue> converted;
  converted.reserve(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    converted.push_back(torch::jit::toIValue(values[i], expected[first + i].type()));
  }
  return converted;
}

}  // namespace

BoundOperator::BoundOperator(const py::handle& native_op, size_t num_inputs)
    : operator_(find_operator(native_op.attr("operator").cast<std::string>())), num_inputs_(num_inputs) {
  arguments_ = schema_arguments(operator_.schema(), num_inputs, native_op.attr("arguments").cast<py::tuple>());
}

std::vector<c10::IValue> BoundOperator::step_arguments(const py::tuple& arguments) const {
  const size_t first = num_inputs_ + arguments_.size();
  TORCH_CHECK(first + arguments.size() == operator_.schema().arguments().size(), operator_.schema().name(),
              " takes ", operator_.schema().arguments().size(), " arguments, got ", first + arguments.size());
  return schema_arguments(operator_.schema(), first, arguments);
}

torch::Tensor BoundOperator::operator()(std::initializer_list<torch::Tensor> inputs,
                                        const std::vector<c10::IValue>& step_arguments) const {
  torch::jit::Stack stack;
  stack.reserve(inputs.size() + arguments_.size() + step_arguments.size());
  for (const torch::Tensor& input : inputs) stack.emplace_back(input);
  stack.insert(stack.end(), arguments_.begin(), arguments_.end());
  stack.insert(stack.end(), step_arguments.begin(), step_arguments.end());
  operator_.callBoxed(stack);
  return std::move(stack.front()).toTensor();
}

LlamaDecoderProgram::LlamaDecoderProgram(int64_t num_heads, int64_t num_kv_heads, int64_t head_size, double eps,
                                         int64_t silu_vector_block, torch::Tensor final_norm)
    : num_heads_(num_heads),
      num_kv_heads_(num_kv_heads),
      head_size_(head_size),
      eps_(eps),
      silu_vector_block_(silu_vector_block),
      final_norm_(std::move(final_norm)) {}

void LlamaDecoderProgram::add_layer(torch::Tensor input_norm, torch::Tensor post_attention_norm,
                                    const py::handle& qkv, const py::handle& o_proj, const py::handle& gate_up,
                                    const py::handle& down, const py::handle& attention) {
  constexpr size_t kRows = 1, kAttentionInputs = 4;  // (query, key, value, kv_cache)
  layers_.push_back(Layer{std::move(input_norm), std::move(post_attention_norm), BoundOperator(qkv, kRows),
                          BoundOperator(o_proj, kRows), BoundOperator(gate_up, kRows), BoundOperator(down, kRows),
                          BoundOperator(attention, kAttentionInputs)});
}

torch::Tensor LlamaDecoderProgram::run(torch::Tensor hidden, const torch::Tensor& cos, const torch::Tensor& sin,
                                       const std::vector<torch::Tensor>& kv_caches,
                                       const py::tuple& step_arguments) const {
  TORCH_CHECK(!layers_.empty(), "the program has no layers");
  TORCH_CHECK(kv_caches.size() == layers_.size(), "got ", kv_caches.size(), " KV caches for ", layers_.size(),
              " layers");
  TORCH_CHECK(hidden.dim() == 2 && hidden.is_contiguous(), "hidden states must be contiguous [tokens, hidden_size]");
  const std::vector<c10::IValue> step = layers_.front().attention.step_arguments(step_arguments);
  py::gil_scoped_release no_gil;
  return run_layers(std::move(hidden), cos, sin, kv_caches, step);
}

torch::Tensor LlamaDecoderProgram::run_layers(torch::Tensor residual, const torch::Tensor& cos,
                                              const torch::Tensor& sin, const std::vector<torch::Tensor>& kv_caches,
                                              const std::vector<c10::IValue>& step) const {
  const int64_t tokens = residual.size(0);
  const int64_t query_size = num_heads_ * head_size_, kv_size = num_kv_heads_ * head_size_;
  torch::Tensor hidden;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& layer = layers_[i];
    // The first layer's input is the residual; later ones fold the previous block's residual add into the norm.
    hidden = i == 0 ? rms_norm(residual, layer.input_norm, eps_)
                    : fused_add_rms_norm(hidden, residual, layer.input_norm, eps_);
    const torch::Tensor qkv = layer.qkv({hidden});
    // q and k sit side by side in the fused output: one rotation covers both.
    const torch::Tensor query_key = rotate_heads(qkv.narrow(1, 0, query_size + kv_size), cos, sin);
    const torch::Tensor attended = layer.attention(
        {query_key.narrow(1, 0, query_size).view({tokens, num_heads_, head_size_}),
         query_key.narrow(1, query_size, kv_size).view({tokens, num_kv_heads_, head_size_}),
         qkv.narrow(1, query_size + kv_size, kv_size).view({tokens, num_kv_heads_, head_size_}), kv_caches[i]},
        step);
    hidden = fused_add_rms_norm(layer.o_proj({attended.view({tokens, query_size})}), residual,
                                layer.post_attention_norm, eps_);
    hidden = layer.down({silu_and_mul(layer.gate_up({hidden}), silu_vector_block_)});
  }
  return fused_add_rms_norm(hidden, residual, final_norm_, eps_);
}
