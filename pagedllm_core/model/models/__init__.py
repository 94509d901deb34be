"""Which of our model implementations serves a Hugging Face architecture."""

from __future__ import annotations

import importlib

from pagedllm_core.errors import ModelLoadError

# architectures[0] of a config.json -> lazy "module:Class" path, imported only when chosen.
MODEL_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "pagedllm_core.model.models.llama:LlamaForCausalLM",
    "MistralForCausalLM": "pagedllm_core.model.models.llama:MistralForCausalLM",
    "Qwen2ForCausalLM": "pagedllm_core.model.models.qwen2:Qwen2ForCausalLM",
    "OPTForCausalLM": "pagedllm_core.model.models.opt:OPTForCausalLM",
    "BertModel": "pagedllm_core.model.models.bert:BertModel",
}

# Architectures without a language-model head: they serve embeddings only.
ENCODER_ARCHITECTURES = frozenset({"BertModel"})


def architecture_name(hf_config) -> str:
    """``architectures[0]``, or for configs without it (GGUF) the causal-LM class of ``model_type``."""
    if getattr(hf_config, "architectures", None):
        return hf_config.architectures[0]
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(hf_config.model_type, f"model_type {hf_config.model_type!r}")


def resolve_model_class(hf_config) -> type:
    """The class implementing the config's architecture; a :class:`ModelLoadError` lists the supported ones."""
    architecture = architecture_name(hf_config)
    path = MODEL_ARCHITECTURES.get(architecture)
    if path is None:
        raise ModelLoadError(
            f"architecture {architecture} is not supported (supported: {', '.join(sorted(MODEL_ARCHITECTURES))})"
        )
    module_name, _, class_name = path.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
