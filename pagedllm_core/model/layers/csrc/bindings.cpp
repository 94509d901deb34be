// The Python module of the decoder layers' C++ kernels and of the decoder program.
#include <torch/extension.h>

#include "cpu_layer_kernels.h"
#include "decoder_program.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rms_norm", &rms_norm, "RMSNorm of float32, bfloat16 or float16 rows");
  m.def("fused_add_rms_norm", &fused_add_rms_norm, "residual += x, then RMSNorm(residual)");
  m.def("silu_and_mul", &silu_and_mul, "silu(gate) * up of rows [..., 2 * d]");
  m.def("rotate_heads", &rotate_heads, "rotary embedding of heads in the rotate-half layout");
  pybind11::class_<LlamaDecoderProgram>(m, "LlamaDecoderProgram")
      .def(pybind11::init<int64_t, int64_t, int64_t, double, int64_t, torch::Tensor>(), pybind11::arg("num_heads"),
           pybind11::arg("num_kv_heads"), pybind11::arg("head_size"), pybind11::arg("eps"),
           pybind11::arg("silu_vector_block"), pybind11::arg("final_norm"))
      .def("add_layer", &LlamaDecoderProgram::add_layer, pybind11::arg("input_norm"),
           pybind11::arg("post_attention_norm"), pybind11::arg("qkv"), pybind11::arg("o_proj"),
           pybind11::arg("gate_up"), pybind11::arg("down"), pybind11::arg("attention"))
      .def("run", &LlamaDecoderProgram::run, pybind11::arg("hidden"), pybind11::arg("cos"), pybind11::arg("sin"),
           pybind11::arg("kv_caches"), pybind11::arg("step_arguments"))
      .def_property_readonly("num_layers", &LlamaDecoderProgram::num_layers);
}
