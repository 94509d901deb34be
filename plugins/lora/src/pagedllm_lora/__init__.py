"""pagedllm plugin for serving LoRA adapters.

It registers the LoRA manager ``lora`` (:class:`pagedllm_lora.manager.PunicaLoRAManager`): it reads
adapters saved by peft, keeps a bounded set of them in memory and adds each token's low-rank delta to
the projections it wraps, for a batch that mixes adapters, in one batched op per layer. peft is
imported only when the manager is chosen (``enable_lora``).
"""

from pagedllm_core import hookimpl


@hookimpl
def register_lora_managers(register):
    register(
        "lora",
        "pagedllm_lora.manager:PunicaLoRAManager",
        "peft LoRA adapters, many per batch (Punica-style batched deltas; Triton kernels on CUDA)",
    )
