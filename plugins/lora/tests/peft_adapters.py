"""Random peft adapters for tests, made and run by peft itself (the reference)."""

from __future__ import annotations

from pathlib import Path

import torch

ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_peft_adapter(model_dir, out_dir, r: int, lora_alpha: int, target_modules, use_rslora=False, seed=0) -> str:
    """Save a peft LoRA adapter of ``model_dir`` with random, non-zero A and B (so its delta shows) to ``out_dir``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=r, lora_alpha=lora_alpha, target_modules=list(target_modules), use_rslora=use_rslora,
        init_lora_weights=False,  # random B as well as A: a fresh adapter would change nothing
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(base, config)
    model.save_pretrained(out_dir)
    return str(Path(out_dir))


def peft_greedy(model_dir, adapter_dir, prompt_ids: list[list[int]], num_new_tokens: int, merge: bool):
    """Greedy continuations from transformers + peft (float32), unmerged or merged into the weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = base if adapter_dir is None else PeftModel.from_pretrained(base, adapter_dir)
    if merge and adapter_dir is not None:
        model = model.merge_and_unload()
    model.eval()
    continuations = []
    for ids in prompt_ids:
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=num_new_tokens,
                do_sample=False, pad_token_id=0, eos_token_id=None,
            )
        continuations.append(out[0, len(ids):].tolist())
    return continuations
