"""The "traditional system" the PagedAttention paper compares with: transformers' ``generate`` on
static batches, each left-padded to its longest prompt and run until every sequence has its tokens.

It loads the same checkpoint as the engine (GGUF dequantized the same way) in the engine's dtype.
"""

from __future__ import annotations

import time

import torch
from transformers.generation.streamers import BaseStreamer

from pagedllm_core.bench.peak_memory import PeakMemory
from pagedllm_core.bench.results import StreamTiming, ThroughputResult
from pagedllm_core.bench.roofline import ModelFlops
from pagedllm_core.bench.workloads import Workload
from pagedllm_core.config import EngineConfig
from pagedllm_core.model.gguf_parse_cache import reuse_gguf_parses
from pagedllm_core.model.source import resolve_model_source


def load_transformers_model(config: EngineConfig, dtype: torch.dtype, device: torch.device):
    """transformers' own implementation of the engine's model, from the same files."""
    from transformers import AutoModelForCausalLM

    source = resolve_model_source(config)
    with reuse_gguf_parses(source.gguf_parses):
        model = AutoModelForCausalLM.from_pretrained(
            source.directory, gguf_file=source.gguf_file, revision=config.revision, dtype=dtype
        )
    return model.to(device).eval()


def pad_token_id_for(engine) -> int:
    """The engine's pad token, else one of its EOS tokens: padding is masked out, so any id would do."""
    pad_token_id = engine.tokenizer.pad_token_id
    return min(engine.eos_token_ids) if pad_token_id is None else pad_token_id


def run_static_batches(model, workload: Workload, batch_size: int, pad_token_id: int) -> ThroughputResult:
    """Greedy ``generate`` over the workload's prompts in order, ``batch_size`` at a time, each
    generating exactly ``workload.output_len`` tokens."""
    device = model.device
    peak_memory = PeakMemory(device)
    _generate(model, [workload.prompts[0][:8]], 2, pad_token_id)  # warm-up
    peak_memory.reset()
    num_output_tokens = 0
    began = time.perf_counter()
    for start in range(0, len(workload.prompts), batch_size):
        batch = workload.prompts[start : start + batch_size]
        generated = _generate(model, batch, workload.output_len, pad_token_id)
        num_output_tokens += generated.numel()
    elapsed = time.perf_counter() - began
    return ThroughputResult(
        system=f"transformers, static batch {batch_size}",
        num_requests=len(workload.prompts),
        num_prompt_tokens=workload.num_prompt_tokens,
        num_output_tokens=num_output_tokens,
        elapsed=elapsed,
        peak_memory_bytes=peak_memory.read(),
        model_flops=ModelFlops.of_model(model, model.config).workload_flops(workload),
    )


def time_single_stream(model, prompt: list[int], output_len: int, pad_token_id: int) -> StreamTiming:
    """Generate for one prompt alone, timing each token as ``generate`` hands it to a streamer."""
    clock = _TokenClock()
    began = time.perf_counter()
    _generate(model, [prompt], output_len, pad_token_id, streamer=clock)
    # The streamer's first call carries the prompt; each later one a generated token.
    token_times = clock.times[1:]
    return StreamTiming(token_times[0] - began, token_times[-1] - token_times[0], len(token_times))


class _TokenClock(BaseStreamer):
    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


@torch.inference_mode()
def _generate(model, prompts: list[list[int]], output_len: int, pad_token_id: int, streamer=None) -> torch.Tensor:
    """Greedy generation of exactly ``output_len`` tokens per prompt; returns them, [len(prompts), output_len]."""
    padded_len = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), padded_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), padded_len), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, padded_len - len(prompt) :] = torch.tensor(prompt)
        attention_mask[row, padded_len - len(prompt) :] = 1
    output = model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        do_sample=False,
        max_new_tokens=output_len,
        min_new_tokens=output_len,
        pad_token_id=pad_token_id,
        streamer=streamer,
    )
    return output[:, padded_len:]
