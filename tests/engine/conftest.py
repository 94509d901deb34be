import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.engine.greedy_reference import NUM_NEW_TOKENS, PROMPTS, model_overrides


@pytest.fixture(scope="session")
def transformers_greedy(tiny_model_dir):
    """``transformers_greedy(architecture)`` -> (prompt token ids, greedy continuations) from transformers."""
    cache = {}

    def get(architecture: str):
        if architecture not in cache:
            directory = tiny_model_dir(architecture, **model_overrides(architecture))
            tokenizer = AutoTokenizer.from_pretrained(directory)
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
            model.generation_config.eos_token_id = None  # compare fixed-length continuations
            prompt_ids, continuations = [], []
            for prompt in PROMPTS:
                ids = tokenizer(prompt, return_tensors="pt").input_ids
                with torch.no_grad():
                    out = model.generate(
                        ids, attention_mask=torch.ones_like(ids), max_new_tokens=NUM_NEW_TOKENS,
                        do_sample=False, pad_token_id=0,
                    )
                prompt_ids.append(ids[0].tolist())
                continuations.append(out[0, ids.shape[1]:].tolist())
            cache[architecture] = (prompt_ids, continuations)
        return cache[architecture]

    return get
