"""Our models, run over the paged KV cache, give transformers' logits: prefill, decode and both mixed."""

import random

import pytest
import torch

from pagedllm_core.testing import SequenceChunk

ATOL = 1e-4
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
ARCHITECTURES = [
    pytest.param("LlamaForCausalLM", {}, id="llama"),
    pytest.param("MistralForCausalLM", {}, id="mistral"),
    pytest.param("Qwen2ForCausalLM", {}, id="qwen2"),
    pytest.param("OPTForCausalLM", {}, id="opt"),
    pytest.param("OPTForCausalLM", {"word_embed_proj_dim": 32}, id="opt-project-in-out"),
    pytest.param("OPTForCausalLM", {"do_layer_norm_before": False}, id="opt-norm-after"),
    pytest.param(
        "LlamaForCausalLM",
        {"tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True, "rope_parameters": LLAMA3_ROPE},
        id="llama-tied-biased-llama3-rope",
    ),
]
PROMPTS = [[5, 17, 99, 300, 12, 7, 8], [44, 45], [100, 200, 300, 400, 500, 11, 12, 13, 14, 15, 16, 17, 18]]


class Sequences:
    """Token lists with block tables drawn from a shuffled pool, so no table is contiguous."""

    def __init__(self, prompts, block_size: int, num_blocks: int = 64):
        self.block_size = block_size
        self.free_blocks = list(range(num_blocks))
        random.Random(0).shuffle(self.free_blocks)
        self.tokens = [list(prompt) for prompt in prompts]
        self.block_tables = [[] for _ in prompts]
        for index in range(len(prompts)):
            self._cover(index)

    def append(self, index: int, token: int) -> None:
        self.tokens[index].append(token)
        self._cover(index)

    def _cover(self, index: int) -> None:
        while len(self.block_tables[index]) * self.block_size < len(self.tokens[index]):
            self.block_tables[index].append(self.free_blocks.pop())

    def chunk(self, index: int, start: int, end: int | None = None) -> SequenceChunk:
        """Tokens ``start:end`` of sequence ``index`` as one step's share, the rest being cached."""
        return SequenceChunk(self.tokens[index][start:end], start, self.block_tables[index])

    def last_token_chunk(self, index: int) -> SequenceChunk:
        return self.chunk(index, len(self.tokens[index]) - 1)


def rows_per_chunk(logits, chunks):
    return logits.split([len(chunk.token_ids) for chunk in chunks])


@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("architecture, overrides", ARCHITECTURES)
def test_prefill_then_decode(architecture, overrides, block_size, paged_model, transformers_logits):
    paged = paged_model(architecture, block_size, **overrides)
    sequences = Sequences(PROMPTS, block_size)

    chunks = [sequences.chunk(index, 0) for index in range(len(PROMPTS))]
    logits = paged.step(chunks)
    for index, rows in enumerate(rows_per_chunk(logits, chunks)):
        torch.testing.assert_close(
            rows, transformers_logits(architecture, PROMPTS[index], **overrides), atol=ATOL, rtol=0
        )

    last_rows = [rows[-1] for rows in rows_per_chunk(logits, chunks)]
    for _ in range(3):
        for index, row in enumerate(last_rows):
            sequences.append(index, int(row.argmax()))
        last_rows = paged.step([sequences.last_token_chunk(index) for index in range(len(PROMPTS))])
        for index, tokens in enumerate(sequences.tokens):
            expected = transformers_logits(architecture, tokens, **overrides)[-1]
            torch.testing.assert_close(last_rows[index], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", "OPTForCausalLM"])
def test_chunked_prefill_beside_decode_across_scattered_blocks(architecture, paged_model, transformers_logits):
    """A long prompt prefilled in two chunks over non-adjacent blocks, sharing steps with a decode."""
    block_size = 4
    paged = paged_model(architecture, block_size)
    long_prompt, short_prompt = PROMPTS[2], PROMPTS[0]
    sequences = Sequences([long_prompt, short_prompt], block_size)
    assert sequences.block_tables[0] != sorted(sequences.block_tables[0])

    first = [sequences.chunk(0, 0, 6), sequences.chunk(1, 0)]
    logits = paged.step(first)
    long_rows, short_rows = rows_per_chunk(logits, first)
    torch.testing.assert_close(long_rows, transformers_logits(architecture, long_prompt[:6]), atol=ATOL, rtol=0)
    torch.testing.assert_close(short_rows, transformers_logits(architecture, short_prompt), atol=ATOL, rtol=0)

    sequences.append(1, int(short_rows[-1].argmax()))
    second = [sequences.chunk(0, 6), sequences.last_token_chunk(1)]
    logits = paged.step(second)
    long_rows, decode_row = rows_per_chunk(logits, second)
    torch.testing.assert_close(long_rows, transformers_logits(architecture, long_prompt)[6:], atol=ATOL, rtol=0)
    torch.testing.assert_close(
        decode_row[0], transformers_logits(architecture, sequences.tokens[1])[-1], atol=ATOL, rtol=0
    )


def test_greedy_continuation_is_varied(paged_model):
    """The tiny models are only useful as oracles if their greedy output is not one repeated token."""
    paged = paged_model("LlamaForCausalLM", 16)
    sequences = Sequences([PROMPTS[0]], 16)
    logits = paged.step([sequences.chunk(0, 0)])
    for _ in range(8):
        sequences.append(0, int(logits[-1].argmax()))
        logits = paged.step([sequences.last_token_chunk(0)])
    assert len(set(sequences.tokens[0][len(PROMPTS[0]) :])) > 3
