"""Embeddings equal sentence-transformers' (encoders) and transformers' hidden states pooled (decoders)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pagedllm_core.entrypoints.llm import LLM
from pagedllm_core.pooling.params import PoolingParams

TEXTS = [
    "A man is eating food.",
    "The new movie is awesome, and it is one of the best films I have seen this year.",
    "Paged attention",
    "pagedllm serves embeddings for retrieval-augmented generation " * 6,
]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    # max_num_batched_tokens below the longest prompt's padded batch: the texts run in several batches
    return LLM(str(minilm_dir), max_num_batched_tokens=64)


def test_minilm_matches_sentence_transformers(minilm, minilm_dir):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu", local_files_only=True)
    expected = torch.tensor(reference.encode(TEXTS))

    outputs = minilm.embed(TEXTS, use_tqdm=False)

    ours = torch.tensor([output.outputs.embedding for output in outputs])
    assert minilm.task == "embed" and ours.shape == (len(TEXTS), 384)
    assert F.cosine_similarity(ours, expected).min() > 1 - 1e-4
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)  # the checkpoint's Normalize
    assert outputs[0].prompt_token_ids == minilm.get_tokenizer().encode(TEXTS[0])


def test_batching_does_not_change_embeddings(minilm):
    together = minilm.embed(TEXTS, use_tqdm=False)
    alone = [minilm.embed(text, use_tqdm=False)[0] for text in TEXTS]
    for batched, single in zip(together, alone):
        assert torch.allclose(torch.tensor(batched.outputs.embedding), torch.tensor(single.outputs.embedding), atol=1e-5)


def test_token_id_prompts_and_unnormalized_output(minilm):
    token_ids = minilm.get_tokenizer().encode(TEXTS[1])
    from_text = minilm.embed(TEXTS[1], use_tqdm=False)[0].outputs.embedding
    from_ids = minilm.embed({"prompt_token_ids": token_ids}, use_tqdm=False)[0].outputs.embedding
    raw = minilm.embed(TEXTS[1], PoolingParams(normalize=False), use_tqdm=False)[0].outputs.embedding
    assert from_ids == from_text
    assert torch.allclose(F.normalize(torch.tensor(raw), dim=0), torch.tensor(from_text), atol=1e-6)
    assert abs(torch.tensor(raw).norm().item() - 1) > 1e-3


@pytest.mark.parametrize("pooling_type", ["LAST", "MEAN", "CLS"])
def test_decoder_pooling_matches_transformers(tiny_model_dir, pooling_type):
    from transformers import AutoModel, AutoTokenizer

    directory = tiny_model_dir("LlamaForCausalLM")
    llm = LLM(str(directory), task="embed", override_pooler_config={"pooling_type": pooling_type}, dtype="float32")
    texts = ["Once upon a time", "The user asks a question and the assistant answers it politely."]
    outputs = llm.embed(texts, use_tqdm=False)

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory, dtype=torch.float32)
    for text, output in zip(texts, outputs):
        with torch.inference_mode():
            hidden = model(torch.tensor([tokenizer.encode(text)])).last_hidden_state[0]
        pooled = {"LAST": hidden[-1], "MEAN": hidden.mean(0), "CLS": hidden[0]}[pooling_type]
        ours = torch.tensor(output.outputs.embedding)
        assert F.cosine_similarity(ours, pooled, dim=0) > 1 - 1e-4
        assert abs(ours.norm().item() - 1) < 1e-5  # decoders are normalized by default
