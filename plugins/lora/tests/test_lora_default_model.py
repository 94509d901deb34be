"""An adapter over GGUF blocks. The default model's GGUF blocks (SmolLM2-135M-Instruct, Q4_1): greedy tokens equal
transformers + peft on the same (dequantized) weights and the same adapter (slow: two loads of a 135M model);
a wrapped GGUF layer against the dense layer of its dequantized weight (fast)."""

import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("gguf")

from peft_adapters import ALL_TARGETS  # noqa: E402

from pagedllm_core import LLM, LoRARequest, SamplingParams  # noqa: E402
from pagedllm_core.model.gguf_parse_cache import reuse_gguf_parses  # noqa: E402
from pagedllm_core.model.source import default_model_source  # noqa: E402

Q4_1, Q8_0 = 3, 8
PROMPTS = ["The capital of France is", "def fibonacci(n):"]
NUM_NEW_TOKENS = 8


@pytest.mark.slow
def test_adapter_over_gguf_blocks_matches_peft(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    source = default_model_source()
    with reuse_gguf_parses(source.gguf_parses):
        base = AutoModelForCausalLM.from_pretrained(source.directory, gguf_file=source.gguf_file, dtype=torch.float32)
    # Small random deltas (alpha/r = 1/2): enough to change the output, not to make it noise.
    config = LoraConfig(r=8, lora_alpha=4, target_modules=ALL_TARGETS, init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        peft_model = get_peft_model(base, config).eval()
    peft_model.save_pretrained(tmp_path)

    llm = LLM(dtype="float32", max_model_len=256, enable_lora=True, max_lora_rank=8)
    model = llm.llm_engine.executor.worker.model_runner.model
    assert type(model.model.layers[0].self_attn.qkv_proj.base).__name__ == "GGUFLinear"
    params = SamplingParams(temperature=0.0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True)
    ours = llm.generate(PROMPTS, params, use_tqdm=False, lora_request=LoRARequest("smol", 1, str(tmp_path)))
    base_outputs = llm.generate(PROMPTS, params, use_tqdm=False)
    changed = 0
    for prompt, output, base_output in zip(PROMPTS, ours, base_outputs):
        ids = torch.tensor([output.prompt_token_ids])
        with torch.no_grad():
            expected = peft_model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NUM_NEW_TOKENS, do_sample=False,
                eos_token_id=None, pad_token_id=0,
            )[0, ids.shape[1]:].tolist()
        assert output.outputs[0].token_ids == expected, prompt
        changed += expected != base_output.outputs[0].token_ids
    assert changed, "the adapter changes nothing: the test would prove nothing"


@pytest.mark.parametrize("quant_type", [Q4_1, Q8_0])
def test_wrapped_gguf_layer_matches_the_dense_layer_with_lora(quant_type):
    from pagedllm_core.model.layers.linear import MergedLinear
    from pagedllm_lora.adapter import LoRAWeights
    from pagedllm_lora.layer import LoRALinear
    from pagedllm_lora.ops import torch_op
    from pagedllm_lora.step_state import LoRAStepState
    from pagedllm_quant_gguf.blocks import dequantize
    from pagedllm_quant_gguf.kernels import load_kernels
    from pagedllm_quant_gguf.layer import GGUFLinear
    from pagedllm_quant_gguf.options import GGUFOptions
    from pagedllm_quant_gguf.testing import random_blocks

    in_features, sizes = 64, [48, 16, 16]  # a fused q/k/v
    blocks = random_blocks(sum(sizes), 2, quant_type)
    quantized = GGUFLinear(in_features, sizes, blocks, quant_type, False, load_kernels(), GGUFOptions())
    dense = MergedLinear(in_features, sizes, bias=False)
    dense.weight.data = dequantize(blocks, quant_type, in_features)
    generator = torch.Generator().manual_seed(quant_type)
    pieces = {
        name: LoRAWeights(torch.randn(4, in_features, generator=generator), torch.randn(size, 4, generator=generator))
        for name, size in zip(["q_proj", "v_proj"], [48, 16])
    }
    state = LoRAStepState()
    names = ["q_proj", "k_proj", "v_proj"]
    wrapped = [LoRALinear(base, names, 2, 8, state, torch_op, torch.device("cpu"), torch.float32)
               for base in (quantized, dense)]
    for layer in wrapped:
        layer.set_slot(1, pieces)
    x = torch.randn(5, in_features, generator=generator)
    state.update(torch.tensor([1, -1, 1, 1, -1]), torch.device("cpu"), torch.float32)
    got, expected = (layer(x) for layer in wrapped)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    delta = x @ pieces["q_proj"].lora_a.T @ pieces["q_proj"].lora_b.T
    torch.testing.assert_close(got[0, :48], quantized(x)[0, :48] + delta[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[1], quantized(x)[1], rtol=0, atol=0)  # a base row
