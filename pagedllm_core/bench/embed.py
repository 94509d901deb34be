"""``pagedllm bench embed``: embedding throughput of ``LLM.embed``, with sentence-transformers as the baseline.

Both embed the same sentences (random words, so lengths vary like real text) after an untimed
warm-up; the table gives inputs/s, tokens/s and how far the two disagree (lowest cosine).
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

from pagedllm_core.entrypoints.engine_args import (
    add_engine_arguments,
    add_pooling_arguments,
    engine_settings_from_args,
    pooling_config_from_args,
)
from pagedllm_core.pooling.sentence_transformers import is_sentence_transformers

_WORDS = (
    "the a model cache block token attention memory page request batch server query answer retrieval document "
    "vector search river mountain city train music paper garden window morning history science language"
).split()


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload")
    group.add_argument("--num-prompts", type=int, default=512, help="sentences to embed (default: 512)")
    group.add_argument("--max-words", type=int, default=48, help="sentences have 4 to this many words (default: 48)")
    group.add_argument("--workload-seed", type=int, default=0, help="seed of the sentences (default: 0)")
    group.add_argument(
        "--baseline-batch-size", type=int, default=32, help="sentence-transformers' batch size (default: 32, its own)"
    )
    group.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip sentence-transformers")
    add_engine_arguments(parser)
    add_pooling_arguments(parser)


def sentences(num_prompts: int, max_words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(_WORDS, k=rng.randint(4, max_words))) for _ in range(num_prompts)]


def _timed(embed, texts: list[str]) -> tuple[float, torch.Tensor]:
    embed(texts[:8])  # warm-up: first-call allocations and kernel selection
    began = time.perf_counter()
    vectors = embed(texts)
    return time.perf_counter() - began, vectors


def run_embed_bench(args: argparse.Namespace) -> str:
    from pagedllm_core.entrypoints.llm import LLM

    pooling = pooling_config_from_args(args)
    settings = engine_settings_from_args(args)
    llm = LLM(task=pooling.task, override_pooler_config=pooling.override_pooler_config, **settings)
    texts = sentences(args.num_prompts, args.max_words, args.workload_seed)
    num_tokens = sum(len(llm.get_tokenizer().encode(text)) for text in texts)

    def ours(batch: list[str]) -> torch.Tensor:
        return torch.tensor([output.outputs.embedding for output in llm.embed(batch, use_tqdm=False)])

    directory = llm.llm_engine.loaded.source.directory
    rows = [("pagedllm LLM.embed", *_timed(ours, texts))]
    notes = []
    if args.baseline and not is_sentence_transformers(directory):
        notes.append("No baseline: sentence-transformers runs sentence-transformers checkpoints only.")
    elif args.baseline:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(directory), device=str(llm.llm_engine.loaded.device), local_files_only=True)

        def baseline(batch: list[str]) -> torch.Tensor:
            return torch.tensor(model.encode(batch, batch_size=args.baseline_batch_size, show_progress_bar=False))

        rows.append((f"sentence-transformers encode (batch {args.baseline_batch_size})", *_timed(baseline, texts)))

    lines = [
        f"bench embed: {args.num_prompts} sentences of 4-{args.max_words} random words ({num_tokens} tokens), "
        f"model {args.model or 'the default'}, {torch.get_num_threads()} threads, "
        f"max_num_batched_tokens {llm.llm_engine.config.max_num_batched_tokens}. {' '.join(notes)}".rstrip(),
        "",
        "| system | seconds | inputs/s | tokens/s | lowest cosine to pagedllm |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    reference = rows[0][2]
    for system, seconds, vectors in rows:
        cosine = F.cosine_similarity(vectors, reference).min().item()
        lines.append(
            f"| {system} | {seconds:.2f} | {len(texts) / seconds:.0f} | {num_tokens / seconds:.0f} | {cosine:.6f} |"
        )
    return "\n".join(lines)
