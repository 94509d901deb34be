"""Running batches of whole prompts through the model and pooling them: where embedding tensors are built."""

from __future__ import annotations

import torch

from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.pooling.loading import EmbeddingModel


class EmbeddingRunner:
    """One forward per batch over the prompts laid end to end; no KV cache is read or written."""

    def __init__(self, loaded: EmbeddingModel):
        self.loaded = loaded

    @torch.inference_mode()
    def run(self, prompts: list[list[int]]) -> torch.Tensor:
        """Token ids of each prompt -> pooled float32 embeddings ``[num_prompts, hidden_size]`` on the CPU."""
        loaded = self.loaded
        device = loaded.device
        lengths = torch.tensor([len(prompt) for prompt in prompts], dtype=torch.int32)
        input_ids = torch.tensor([token for prompt in prompts for token in prompt], dtype=torch.long, device=device)
        positions = torch.cat([torch.arange(length) for length in lengths.tolist()]).to(device)
        query_start_loc = torch.zeros(len(prompts) + 1, dtype=torch.int32)
        query_start_loc[1:] = lengths.cumsum(0)
        max_len = int(lengths.max())
        metadata = AttentionMetadata(
            slot_mapping=torch.full((input_ids.shape[0],), -1, dtype=torch.long, device=device),  # no cache slots
            query_start_loc=query_start_loc.to(device),
            seq_lens=lengths.to(device),
            block_tables=torch.empty(len(prompts), 0, dtype=torch.int32, device=device),
            max_query_len=max_len,
            max_seq_len=max_len,
        )
        loaded.attention.prepare(metadata)
        # hidden_states: [num_tokens, hidden_size]
        hidden_states = loaded.model(input_ids, positions, [None] * loaded.num_layers, metadata)
        return loaded.pooler(hidden_states, metadata.query_start_loc).cpu()
