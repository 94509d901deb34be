"""Every hook a pagedllm plugin can implement.

All hooks follow one pattern: the core calls ``register_<kind>(register)`` once per plugin when
the registry is built at engine start-up (never per step), and the plugin calls
``register(name, target, description="")`` for each implementation it provides:

- ``name`` is what users pick in config (``attention_backend="torch"``) or on the command line.
- ``target`` is the implementing class, or a lazy ``"package.module:ClassName"`` path that is
  imported only when that name is chosen, so heavy dependencies (triton, outlines, peft) cost
  nothing unless used.
- ``description`` is one line shown by ``pagedllm plugins``.
- ``auto_priority`` (optional) makes it a candidate of ``auto`` selection (see :class:`RegisterFn`).

An implementation with settings of its own declares them as a
:class:`pagedllm_core.plugin_options.PluginOptions` subclass in its ``options_class`` attribute; the
engine validates the user's ``plugin_options[<config field>]`` against it and passes the result to
the constructor as the keyword ``options``.

Registering a name another plugin already registered for the same kind is an error naming both
plugins. The class contract for each kind lives next to the code that calls it and is named in
each hook's docstring.
"""

from __future__ import annotations

from typing import Protocol

import pluggy

PROJECT_NAME = "pagedllm"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class RegisterFn(Protocol):
    """The callback every ``register_*`` hook receives.

    ``auto_priority`` lets an implementation join ``auto`` selection: a mapping from where it
    applies (a device type such as ``"cpu"`` or ``"cuda"`` for attention backends, a checkpoint format
    such as ``"gguf"`` for quantizers) to a priority; ``auto`` tries the highest first.
    """

    def __call__(
        self, name: str, target: type | str, description: str = "", auto_priority: dict[str, int] | None = None
    ) -> None: ...


@hookspec
def register_attention_backends(register: RegisterFn) -> None:
    """Register paged attention backends.

    Called once when the registry is built. Each target is an
    :class:`pagedllm_core.attention.backend.AttentionBackend` subclass. The engine instantiates the
    one named by ``EngineConfig.attention_backend`` (default ``"auto"``: of the backends registered with an
    ``auto_priority`` for the device type, the highest that can run the model) once per model, after
    asking its ``unsupported_reasons(spec)`` whether it can run the model's head size, dtype and
    device; every attention layer then calls its ``forward`` on each step.

    :param register: call ``register(name, target, description)`` once per backend.
    :returns: nothing; results are collected through ``register``.
    """


@hookspec
def register_samplers(register: RegisterFn) -> None:
    """Register samplers that turn a step's logits into next tokens.

    Called once when the registry is built. Each target is a
    :class:`pagedllm_core.sampling.sampler.Sampler` subclass. The model runner instantiates the one
    named by ``EngineConfig.sampler`` (default ``"default"``) and calls ``sample(logits, metadata)``
    once per step with the logits of every sequence that needs a new token, batched.

    :param register: call ``register(name, target, description)`` once per sampler.
    :returns: nothing; results are collected through ``register``.
    """


@hookspec
def register_schedulers(register: RegisterFn) -> None:
    """Register schedulers that decide how many tokens each request runs per step.

    Called once when the registry is built. Each target is a
    :class:`pagedllm_core.engine.scheduler.Scheduler` subclass, constructed with the engine config
    and the KV cache manager. The engine calls its ``schedule()`` at the start of every step and
    ``update_from_output(...)`` after the model has run. The name comes from
    ``EngineConfig.scheduler`` (default ``"default"``, continuous batching with preemption).

    :param register: call ``register(name, target, description)`` once per scheduler.
    :returns: nothing; results are collected through ``register``.
    """


@hookspec
def register_quantizers(register: RegisterFn) -> None:
    """Register weight quantization methods (GGUF blocks, AWQ, ...).

    Called once when the registry is built. Each target is a
    :class:`pagedllm_core.model.quantization.QuantizationMethod` subclass. The engine picks the one
    named by ``EngineConfig.quantization`` (default ``"auto"``: the checkpoint's own format when an
    installed method registered with an ``auto_priority`` for that format can run it; ``"none"`` keeps
    dense weights), asks its ``unsupported_reasons(target)``, builds it with the checkpoint, dtype
    and device, and calls ``process_weights_after_loading(model)`` once the weights are loaded.

    :param register: call ``register(name, target, description)`` once per method.
    :returns: nothing; results are collected through ``register``.
    """


@hookspec
def register_lora_managers(register: RegisterFn) -> None:
    """Register LoRA adapter managers.

    Called once when the registry is built. Each target is a
    :class:`pagedllm_core.model.lora.LoRAManager` subclass. With ``EngineConfig.enable_lora`` the
    worker resolves the manager named by ``EngineConfig.lora_manager`` (default ``"lora"``, from
    ``pagedllm[lora]``) and constructs it with the loaded model, the config, the device and the
    dtype; it loads and checks adapters (``add_adapter``, also called when a request first names
    one) and, before every step's forward, learns each token's adapter (``set_step_adapters``).

    :param register: call ``register(name, target, description)`` once per manager.
    :returns: nothing; results are collected through ``register``.
    """


@hookspec
def register_output_constraints(register: RegisterFn) -> None:
    """Register output-constraint backends: structured outputs (JSON schema, regex, choice guidance).

    Called once when the registry is built. Each target is a
    :class:`pagedllm_core.sampling.constraints.ConstraintBackend` subclass. The engine resolves the
    one named by ``EngineConfig.structured_outputs_backend`` (default ``"outlines"``, from the
    ``pagedllm[guided]`` plugin) the first time a request carries ``structured_outputs``, and builds
    it with the tokenizer, the logits width and the EOS token ids, on a worker thread. Its
    ``compile(spec)`` turns each distinct spec into a ``CompiledConstraint`` (cached by the engine,
    bounded by ``structured_outputs_compile_timeout``); every constrained sequence holds a
    ``ConstraintState`` from it, whose allowed-token bitmask masks that row's logits before each draw
    and which accepts each emitted token; a sequence ends when its state ``is_complete()``.

    :param register: call ``register(name, target, description)`` once per backend.
    :returns: nothing; results are collected through ``register``.
    """
