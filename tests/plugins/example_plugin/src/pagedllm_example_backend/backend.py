"""The ``example`` attention backend: the torch backend, counting the calls it serves."""

from __future__ import annotations

from pagedllm_core.default_plugins.torch_attention import TorchAttentionBackend


class ExampleAttentionBackend(TorchAttentionBackend):
    """Delegates to the torch backend and counts ``forward`` calls across all instances."""

    # Class-level so a test can read it without a handle on the instance the engine built.
    num_forward_calls = 0

    def forward(self, query, key, value, kv_cache, metadata):
        ExampleAttentionBackend.num_forward_calls += 1
        return super().forward(query, key, value, kv_cache, metadata)
