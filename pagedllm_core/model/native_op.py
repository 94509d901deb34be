"""How a layer takes part in the decoder program (:mod:`pagedllm_core.model.native_decode`): as a torch operator."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NativeOp:
    """A layer's computation as a registered torch operator, called from C++ as
    ``operator(*inputs, *arguments)``: ``NativeOp("aten::linear", (weight, bias))`` for a dense layer.

    ``operator`` is ``"namespace::name"`` (or ``"namespace::name.overload"``); ``arguments`` are
    converted once by the operator's schema, so tensors among them are shared with the layer, not copied.
    """

    operator: str
    arguments: tuple = ()
