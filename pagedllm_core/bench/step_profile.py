"""``pagedllm bench step --profile``: the model's share of a decode step split by kind of work.

Every module of the loaded model is timed by what it does: linear projections ("matmuls"), norms,
the rotary embedding, the attention backend (its cache write apart), the MLP's activation (with the
gated product ``act(gate) * up`` where the model uses :class:`ActAndMul`), the token embedding and the
vocabulary projection ("LM head"); a norm that folds in a residual add counts it. "other model ops"
is what the model's own code does between them (residual adds, views and splits). Times are
exclusive: a call's time excludes that of the timed calls inside it, so the kinds add up to the
model's time. Each timed call costs about a microsecond of its own, so the profiled step is a little
slower than an unprofiled one (both are reported).
"""

from __future__ import annotations

import sys

from torch import nn

from pagedllm_core.bench.timing import ExclusiveTimer
from pagedllm_core.model.layers.activation import ActAndMul
from pagedllm_core.model.layers.attention import PagedAttention
from pagedllm_core.model.layers.rotary import RotaryEmbedding

MODEL_KINDS = (
    "embedding", "norms", "matmuls", "rotary", "cache write", "attention", "activation", "other model ops", "LM head"
)


def instrument_model(runner, timer: ExclusiveTimer) -> None:
    """Wrap ``runner``'s model, module by module, and its attention backend's cache write. The model's
    ``forward`` and ``compute_logits`` are already timed as "model" (:func:`pagedllm_core.bench.step.instrument`):
    what is left there once the modules are timed is the "other model ops"."""
    model = runner.model
    for name, module in model.named_modules():
        kind = _module_kind(name, module)
        if kind is not None:
            timer.wrap(module, "forward", kind)
        if isinstance(module, RotaryEmbedding):
            timer.wrap(module, "embed", "rotary")
            timer.wrap(module, "rotate_heads", "rotary")
        activation = getattr(module, "act", None)
        if callable(activation) and not isinstance(activation, nn.Module):
            timer.wrap(module, "act", "activation")
    backend_module = sys.modules[type(runner.attention).__module__]
    if hasattr(backend_module, "write_kv_cache"):
        timer.wrap(backend_module, "write_kv_cache", "cache write")


def _module_kind(name: str, module: nn.Module) -> str | None:
    if name.rsplit(".", 1)[-1] == "lm_head":
        return "LM head"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, PagedAttention):
        return "attention"
    if isinstance(module, ActAndMul):
        return "activation"
    if isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("Norm"):
        return "norms"
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return "matmuls"
    if isinstance(module, nn.Module) and type(module).__module__.startswith("torch.nn.modules.activation"):
        return "activation"
    return None
