"""Model FLOPs counted by hand for the tiny Llama, and the matmul peak probe."""

import torch
from transformers import AutoModelForCausalLM

from pagedllm_core.bench.roofline import ModelFlops, measure_matmul_peak

# The tiny Llama: hidden 64, 4 query heads and 2 KV heads of size 16, MLP 128, 2 layers, vocabulary 512.
NUM_BODY_WEIGHTS = 2 * (64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128)
NUM_VOCAB_WEIGHTS = 512 * 64


def test_weights_are_counted_from_the_linear_layers(engine, tiny_llama):
    expected = ModelFlops(NUM_BODY_WEIGHTS, NUM_VOCAB_WEIGHTS, num_layers=2, num_heads=4, head_size=16)
    assert ModelFlops.of_model(engine.executor.worker.model_runner.model, engine.model_info.hf_config) == expected
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama)  # q, k and v unfused
    assert ModelFlops.of_model(reference, reference.config) == expected


def test_sequence_flops_by_hand():
    flops = ModelFlops(NUM_BODY_WEIGHTS, NUM_VOCAB_WEIGHTS, num_layers=2, num_heads=4, head_size=16)
    # A 3-token prompt and 2 output tokens feed 4 tokens, which attend to 1 + 2 + 3 + 4 keys; 2 logits rows.
    attention = (1 + 2 + 3 + 4) * 2 * 2 * 2 * 4 * 16
    assert flops.sequence_flops(3, 2) == 2 * NUM_BODY_WEIGHTS * 4 + 2 * NUM_VOCAB_WEIGHTS * 2 + attention


def test_matmul_peak_grows_the_matrices_until_a_call_takes_long_enough():
    quick = measure_matmul_peak(torch.float32, max_size=1024, min_seconds=0.0)
    assert (quick.dtype, quick.size) == (torch.float32, 512) and quick.flops_per_second > 0
    assert measure_matmul_peak(torch.float32, max_size=1024, min_seconds=1e6).size == 1024  # capped
    assert measure_matmul_peak(torch.float32, max_size=64).size == 64
