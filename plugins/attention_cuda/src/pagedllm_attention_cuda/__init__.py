"""pagedllm plugin for CUDA paged attention kernels.

It will register an ``attention_backend`` named ``cuda``: compiled paged attention kernels for
NVIDIA GPUs, checked against the torch reference op. Until that lands it registers nothing, so
installing it changes no behaviour.
"""
