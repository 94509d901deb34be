// The cpu attention backend's extension: its kernels for Python, and the decode step's attention as a torch
// operator for the decoder program.

#include <torch/extension.h>

#include "attention_kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("paged_decode", &paged_decode, "Paged attention of decode rows (CPU)");
  module.def("chunk_attention", &chunk_attention, "Causal paged attention of prompt chunks (CPU)");
  module.def("write_kv_cache", &write_kv_cache, "Store new keys and values in their cache slots (CPU)",
             pybind11::arg("key"), pybind11::arg("value"), pybind11::arg("key_cache"), pybind11::arg("value_cache"),
             pybind11::arg("slot_mapping"), pybind11::arg("k_scale") = 1.0, pybind11::arg("v_scale") = 1.0);
}

// TORCH_EXTENSION_NAME::decode_attention, which the decoder program calls through the dispatcher.
TORCH_LIBRARY(TORCH_EXTENSION_NAME, library) {
  library.def("decode_attention(Tensor query, Tensor key, Tensor value, Tensor kv_cache, Tensor k_scale, "
              "Tensor v_scale, Tensor slot_mapping, Tensor token_index, Tensor block_tables, Tensor seq_lens, "
              "float scale) -> Tensor",
              &decode_attention);
}
