"""pagedllm plugin for AWQ weight quantization.

It will register a ``quantizer`` named ``awq``: it claims the linear layers of an AWQ checkpoint,
keeps their packed 4-bit weights with per-group scales and zero points, and dequantizes them in
its forward pass. Until that lands it registers nothing, so installing it changes no behaviour.
"""
