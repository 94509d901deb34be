"""Helpers for pagedllm's tests and for plugin authors.

- :func:`build_tiny_model` writes a random transformers model with a real tokenizer, small enough to
  build and load in well under a second: an oracle for anything that runs a model.
- :func:`run_model_step` runs one step of our model over the paged KV cache from plain token lists,
  so a model or attention backend can be compared with transformers' logits without the engine.
- :func:`build_sampling_rows` holds sequences in a worker's input batch, so a sampler can be checked
  on logits alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from pagedllm_core.attention.backend import AttentionBackend
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.executor.messages import NewSequenceData
from pagedllm_core.sampling_params import SamplingParams
from pagedllm_core.worker.input_batch import InputBatch
from pagedllm_core.worker.sampling_metadata import SamplingRow

TINY_TOKENIZER_TEXT = """\
The quick brown fox jumps over the lazy dog. A paged attention engine keeps the keys and values of
every sequence in fixed-size blocks, so memory is allocated as a sequence grows and freed when it ends.
Continuous batching lets new requests join a running batch at every step instead of waiting for the
longest one to finish. Hello, world! How are you today? I am fine, thank you. Numbers: 0 1 2 3 4 5 6 7
8 9 10 42 100 2024. Once upon a time there was a little model that wanted to write stories about cats,
dogs, trains, rivers and the sea. The user asks a question and the assistant answers it politely.
"""

# "<|endoftext|>" is there because Qwen2's tokenizer class adds it when a vocabulary lacks it.
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|endoftext|>")
PAD_TOKEN_ID, BOS_TOKEN_ID, EOS_TOKEN_ID = 0, 1, 2

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SHARED = dict(
    vocab_size=512,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=512,
    pad_token_id=PAD_TOKEN_ID,
    bos_token_id=BOS_TOKEN_ID,
    eos_token_id=EOS_TOKEN_ID,
    # Wider than the usual 0.02 so that a random model's greedy output is varied, not one token repeated.
    initializer_range=0.2,
    tie_word_embeddings=False,
)
_LLAMA_LIKE = dict(_SHARED, num_key_value_heads=2, head_dim=16, intermediate_size=128, rms_norm_eps=1e-6)

TINY_CONFIGS: dict[str, dict] = {
    "LlamaForCausalLM": dict(_LLAMA_LIKE, model_type="llama"),
    "MistralForCausalLM": dict(_LLAMA_LIKE, model_type="mistral", sliding_window=None),
    "Qwen2ForCausalLM": dict(_LLAMA_LIKE, model_type="qwen2"),
    "OPTForCausalLM": dict(_SHARED, model_type="opt", ffn_dim=128, init_std=0.2, tie_word_embeddings=True),
}


def build_tiny_model(directory: str | Path, architecture: str, seed: int = 0, **config_overrides) -> Path:
    """Write a random-init transformers model and a small byte-level BPE tokenizer to ``directory``.

    :param architecture: one of :data:`TINY_CONFIGS` (``"LlamaForCausalLM"``, ``"OPTForCausalLM"``, ...).
    :param config_overrides: config fields replacing the tiny defaults (e.g. ``num_hidden_layers=3``).
    :returns: ``directory``, loadable with ``EngineConfig(model=str(directory))`` or ``from_pretrained``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = Path(directory)
    values = dict(TINY_CONFIGS[architecture], architectures=[architecture], **config_overrides)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tokenizer = build_tiny_tokenizer(config.vocab_size)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"vocab_size must be at least {len(tokenizer)} to hold the byte-level tokenizer")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_tokenizer(max_vocab_size: int):
    """A byte-level BPE trained on a paragraph of English, with ChatML-style special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max_vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([TINY_TOKENIZER_TEXT], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=SPECIAL_TOKENS[PAD_TOKEN_ID],
        bos_token=SPECIAL_TOKENS[BOS_TOKEN_ID],
        eos_token=SPECIAL_TOKENS[EOS_TOKEN_ID],
        chat_template=CHAT_TEMPLATE,
    )


@dataclass(frozen=True)
class SequenceChunk:
    """One sequence's share of a step: its new tokens and where its context lives in the KV cache."""

    token_ids: Sequence[int]  # the tokens run this step
    num_computed_tokens: int  # tokens of this sequence already in the KV cache
    block_table: Sequence[int]  # KV block ids covering all its tokens, new ones included


def build_attention_metadata(chunks: Sequence[SequenceChunk], block_size: int, device="cpu") -> AttentionMetadata:
    """The metadata a model runner would build for ``chunks``, flattened sequence after sequence."""
    slots, seq_lens, query_lens = [], [], []
    for chunk in chunks:
        positions = range(chunk.num_computed_tokens, chunk.num_computed_tokens + len(chunk.token_ids))
        slots += [chunk.block_table[p // block_size] * block_size + p % block_size for p in positions]
        seq_lens.append(positions.stop)
        query_lens.append(len(chunk.token_ids))
    max_blocks = max(len(chunk.block_table) for chunk in chunks)
    block_tables = [list(chunk.block_table) + [0] * (max_blocks - len(chunk.block_table)) for chunk in chunks]
    query_start_loc = torch.tensor([0, *query_lens], dtype=torch.int32, device=device).cumsum(0, dtype=torch.int32)
    return AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        query_start_loc=query_start_loc,
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        block_tables=torch.tensor(block_tables, dtype=torch.int32, device=device),
        max_query_len=max(query_lens),
        max_seq_len=max(seq_lens),
    )


@torch.inference_mode()
def run_model_step(
    model, backend: AttentionBackend, kv_caches: torch.Tensor, chunks: Sequence[SequenceChunk], block_size: int
) -> torch.Tensor:
    """Run one step of ``chunks`` through ``model`` and return float32 logits for every new token.

    ``kv_caches`` holds every layer's cache, as :func:`pagedllm_core.worker.kv_cache.allocate_kv_cache` makes.

    A plugin's attention backend can be checked end to end with it: logits of a tiny model
    (:func:`build_tiny_model`) should match the transformers model's, prefill and decode alike.
    """
    device = kv_caches[0].device
    metadata = build_attention_metadata(chunks, block_size, device)
    input_ids = torch.tensor([t for chunk in chunks for t in chunk.token_ids], dtype=torch.int64, device=device)
    positions = torch.cat(
        [torch.arange(c.num_computed_tokens, c.num_computed_tokens + len(c.token_ids), device=device) for c in chunks]
    )
    backend.prepare(metadata)
    hidden_states = model(input_ids, positions, kv_caches, metadata)
    return model.compute_logits(hidden_states)


def build_sampling_rows(
    params: Sequence[SamplingParams],
    vocab_size: int,
    prompts: Sequence[list[int]] | None = None,
    outputs: Sequence[list[int]] | None = None,
    stop_token_ids: Sequence[int] = (),
    generators: dict[int, torch.Generator] | None = None,
    allowed_token_bitmasks: Sequence[bytes | None] | None = None,
) -> tuple[InputBatch, list[SamplingRow]]:
    """A worker's input batch holding one sequence per entry of ``params`` (prompt ``[0]`` unless
    given, ``outputs`` generated so far) and the rows that sample them, for checking a sampler with
    :func:`pagedllm_core.worker.sampling_metadata.build_sampling_metadata` and
    :func:`pagedllm_core.sampling.pipeline.sample_tokens` without a model."""
    prompts = prompts or [[0]] * len(params)
    outputs = outputs or [[]] * len(params)
    longest = max(len(prompt) + len(output) for prompt, output in zip(prompts, outputs))
    batch = InputBatch(max_model_len=longest + 1, max_blocks_per_sequence=1, vocab_size=vocab_size)
    rows = []
    for i, row_params in enumerate(params):
        held = batch.add(
            NewSequenceData(
                seq_id=str(i),
                prompt_token_ids=list(prompts[i]),
                output_token_ids=list(outputs[i]),
                sampling_params=row_params,
                stop_token_ids=list(stop_token_ids),
                block_ids=[0],
                num_computed_tokens=0,
                num_new_tokens=1,
                num_samples=1,
            )
        )
        bitmask = allowed_token_bitmasks[i] if allowed_token_bitmasks else None
        rows.append(SamplingRow(held, (generators or {}).get(i), bitmask))
    return batch, rows
