"""AWQ on the default model (SmolLM2-135M-Instruct): the quantized model stays close to the float one.

Quantizing takes tens of minutes on 2 cores, so this is a heavy test (outside the default run: `-m heavy`), with a lighter search than the command's default
(2 calibration sequences, no clipping). Bounds: perplexity on the held-out text at most 30% above the float
model's (measured: 28.05 against 23.04, +22%), and on average at least 2 identical greedy tokens before the first
difference over the prompt set (the full search: 4.1). A 135M model whose float weights are themselves Q4_1
re-quantized to 4 bits drifts quickly; docs/quantization.md gives the numbers of the full search and of plain
rounding.
"""

import pytest

from pagedllm_core import LLM
from pagedllm_quant_awq.quality import ENGINE_SETTINGS, greedy_agreement, heldout_text, perplexity
from pagedllm_quant_awq.quantize import AWQSettings, quantize_awq

pytestmark = pytest.mark.heavy


def test_awq_default_model_perplexity_and_greedy_agreement(tmp_path):
    checkpoint = quantize_awq("default", tmp_path / "awq", AWQSettings(max_sequences=2, clip=False))
    reference = LLM(quantization="none", **ENGINE_SETTINGS)
    quantized = LLM(model=str(checkpoint), **ENGINE_SETTINGS)
    text = heldout_text()
    float_perplexity, awq_perplexity = perplexity(reference, text), perplexity(quantized, text)
    print(f"perplexity: float32 {float_perplexity:.3f}, AWQ {awq_perplexity:.3f}")
    assert awq_perplexity <= 1.30 * float_perplexity
    agreement = greedy_agreement(reference, quantized, num_tokens=32)
    print(agreement)
    assert agreement.mean_common_prefix >= 2
