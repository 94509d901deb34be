"""pagedllm plugin for serving LoRA adapters.

It will register a ``lora_manager`` named ``lora``: it reads adapters saved by peft, keeps a
bounded set of them in memory and adds each request's low-rank delta to the projections it wraps.
Until that lands it registers nothing, so installing it changes no behaviour.
"""
