"""pagedllm: high-throughput LLM inference with PagedAttention and continuous batching."""

from pagedllm_core.config import EngineConfig
from pagedllm_core.errors import ConfigError, ModelLoadError, PagedLLMError, UnknownPluginTargetError
from pagedllm_core.hookspecs import hookimpl
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.outputs import BeamSearchOutput, BeamSearchSequence, CompletionOutput, Logprob, RequestOutput
from pagedllm_core.pooling.outputs import EmbeddingOutput, EmbeddingRequestOutput
from pagedllm_core.pooling.params import PoolingParams
from pagedllm_core.sampling_params import BeamSearchParams, SamplingParams
from pagedllm_core.structured_outputs import StructuredOutputsParams

__all__ = [
    "LLM",
    "BeamSearchOutput",
    "BeamSearchParams",
    "BeamSearchSequence",
    "Logprob",
    "LoRARequest",
    "CompletionOutput",
    "ConfigError",
    "EmbeddingOutput",
    "EmbeddingRequestOutput",
    "EngineConfig",
    "ModelLoadError",
    "PagedLLMError",
    "PoolingParams",
    "RequestOutput",
    "SamplingParams",
    "StructuredOutputsParams",
    "UnknownPluginTargetError",
    "hookimpl",
]


def __getattr__(name: str):
    # The engine pulls in torch and transformers; plugins importing ``hookimpl`` should not pay for that.
    if name == "LLM":
        from pagedllm_core.entrypoints.llm import LLM

        return LLM
    raise AttributeError(f"module 'pagedllm_core' has no attribute {name!r}")
