"""Plugin objects that the plugin tests register in fixtures, and the stand-in classes they register."""

from __future__ import annotations

from pagedllm_core.default_plugins.torch_attention import TorchAttentionBackend
from pagedllm_core.hookspecs import hookimpl


class FakeAttentionBackend(TorchAttentionBackend):
    """Stands in for a third-party attention backend."""


class FakeSampler:
    """Stands in for a third-party sampler."""


class FakeScheduler:
    """Stands in for a third-party scheduler."""


class FakeQuantizer:
    """Stands in for a third-party quantization method."""


class FakeLoRAManager:
    """Stands in for a third-party LoRA manager."""


class FakeOutputConstraint:
    """Stands in for a third-party output constraint."""


class EveryKindPlugin:
    """Registers one implementation named ``fake`` through every hook, so each hook is exercised."""

    @hookimpl
    def register_attention_backends(self, register):
        register("fake", FakeAttentionBackend, "fake attention")

    @hookimpl
    def register_samplers(self, register):
        register("fake", FakeSampler, "fake sampler")

    @hookimpl
    def register_schedulers(self, register):
        register("fake", FakeScheduler, "fake scheduler")

    @hookimpl
    def register_quantizers(self, register):
        register("fake", FakeQuantizer, "fake quantizer")

    @hookimpl
    def register_lora_managers(self, register):
        register("fake", FakeLoRAManager, "fake LoRA manager")

    @hookimpl
    def register_output_constraints(self, register):
        register("fake", FakeOutputConstraint, "fake output constraint")


class AttentionBackendsPlugin:
    """Registers the given ``name -> target`` attention backends."""

    def __init__(self, targets: dict[str, type | str]):
        self.targets = targets

    @hookimpl
    def register_attention_backends(self, register):
        for name, target in self.targets.items():
            register(name, target, f"backend {name}")


class NothingPlugin:
    """A plugin that implements no hook at all."""


class FailingPlugin:
    """A plugin whose hook raises while registering."""

    @hookimpl
    def register_samplers(self, register):
        raise RuntimeError("sampler registration exploded")
