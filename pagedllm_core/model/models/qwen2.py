"""Qwen2: the Llama decoder with biases on the q/k/v projections only."""

from __future__ import annotations

from pagedllm_core.model.models.llama import LlamaForCausalLM, ProjectionBiases


class Qwen2ForCausalLM(LlamaForCausalLM):
    """Qwen2 and Qwen2.5 dense models."""

    @classmethod
    def projection_biases(cls, hf_config) -> ProjectionBiases:
        return ProjectionBiases(qkv=True, output=False, mlp=False)
