"""The copy-heavy workload: prompts that ask the model to repeat or edit a text they give.

Most of such an answer already stands in the prompt, which is where prompt-lookup speculation
shines; it is the counterpart to W4's random prompts, where nothing can be looked up.
"""

from __future__ import annotations

import random

from pagedllm_core.bench.workloads import Workload

PASSAGES = [
    "A paged key-value cache splits the memory of every sequence into blocks of a fixed number of tokens. "
    "The engine hands out blocks only as a sequence grows, so no memory is reserved for tokens that are never "
    "generated. Blocks that hold the same prompt prefix can be shared between requests, and a block that two "
    "sequences share is copied only when one of them writes into it. When the pool runs dry, the scheduler "
    "preempts the newest sequence and computes it again later.",
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. She trimmed the wick, polished the "
    "great lens until it shone, and wrote the weather in a leather book: wind from the west, a low swell, rain "
    "before midnight. Ships she never saw passed safely because of the light, and in the morning she walked "
    "down to the harbour to buy bread and listen to the fishermen argue about the tides.",
    "To bake a simple loaf, mix five hundred grams of flour with ten grams of salt and seven grams of yeast. "
    "Add three hundred and fifty millilitres of warm water and knead the dough for ten minutes until it is "
    "smooth. Let it rise for an hour, shape it into a round, and let it rise again. Bake it in a hot oven for "
    "thirty five minutes, until the crust is brown and the loaf sounds hollow when you tap it.",
    "Continuous batching lets a server add new requests to the running batch at every step instead of waiting "
    "for the whole batch to finish. Short answers leave early and their places are filled at once, so the "
    "accelerator stays busy and the waiting time of each request drops. The scheduler decides every step how "
    "many tokens each sequence may compute under a fixed token budget.",
]

INSTRUCTIONS = [
    "Repeat the following text exactly, word for word.",
    "Copy the following text, but replace every comma with a semicolon.",
    "Rewrite the following text in the past tense where it is not already, changing nothing else.",
    "Repeat the following text, then stop.",
]


def copy_workload(tokenizer, num_prompts: int = 1, seed: int = 0, output_len: int = 128) -> Workload:
    """``num_prompts`` requests, each an instruction to repeat or edit one of :data:`PASSAGES`, as the
    model's chat prompt when its tokenizer has a chat template."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(num_prompts):
        text = f"{rng.choice(INSTRUCTIONS)}\n\n{rng.choice(PASSAGES)}"
        if getattr(tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": text}]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            prompts.append(tokenizer.encode(text, add_special_tokens=False))
        else:
            prompts.append(tokenizer.encode(text))
    return Workload("copy", prompts, output_len)
