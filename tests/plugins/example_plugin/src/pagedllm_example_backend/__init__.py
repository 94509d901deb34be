"""An example pagedllm plugin: registers the attention backend ``example``.

The target is a lazy ``"module:Class"`` path, so loading this plugin imports nothing heavy; the
backend module (and torch with it) is imported only when a config picks ``example``.
"""

from pagedllm_core.hookspecs import hookimpl


@hookimpl
def register_attention_backends(register):
    register(
        "example",
        "pagedllm_example_backend.backend:ExampleAttentionBackend",
        "torch attention that counts its forward calls (test plugin)",
    )
