"""The offline API: ``LLM(model=...).generate(prompts, SamplingParams(...))``."""

from __future__ import annotations

import dataclasses
import itertools
import weakref
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.beam_search import beam_score
from pagedllm_core.engine.llm_engine import LLMEngine
from pagedllm_core.errors import ConfigError
from pagedllm_core.lora_request import LoRARequest
from pagedllm_core.outputs import BeamSearchOutput, BeamSearchSequence, RequestOutput
from pagedllm_core.pooling.config import PoolerConfig, PoolingConfig
from pagedllm_core.pooling.engine import EmbeddingEngine
from pagedllm_core.pooling.loading import detect_task
from pagedllm_core.pooling.outputs import EmbeddingOutput, EmbeddingRequestOutput
from pagedllm_core.pooling.params import PoolingParams
from pagedllm_core.sampling_params import BeamSearchParams, RequestOutputKind, SamplingParams

PromptInput = str | dict[str, Any]
Message = dict[str, str]


class LLM:
    """Generate for a batch of prompts with continuous batching over a paged KV cache.

    Keywords are :class:`~pagedllm_core.config.EngineConfig` fields (``model``, ``dtype``,
    ``max_model_len``, ``block_size``, ``kv_cache_memory``, ``max_num_seqs``,
    ``max_num_batched_tokens``, ``attention_backend``, ``seed``, ...). Without ``model`` the default
    model (SmolLM2-135M-Instruct) is used.

    ``task="embed"`` (picked by ``auto`` for encoder and sentence-transformers checkpoints) loads
    the model for :meth:`embed` instead, pooled as ``override_pooler_config`` says (e.g.
    ``{"pooling_type": "MEAN", "normalize": True}``) or as the checkpoint does.
    """

    def __init__(
        self,
        model: str | None = None,
        task: str = "auto",
        override_pooler_config: PoolerConfig | dict | None = None,
        **engine_settings: Any,
    ):
        config = EngineConfig.build(model=model, **engine_settings)
        pooling = PoolingConfig.build(task, override_pooler_config)
        self.task = detect_task(config, pooling)
        self._request_counter = itertools.count()
        if self.task == "embed":
            self.llm_engine = EmbeddingEngine(config, pooling)
            return
        self.llm_engine = LLMEngine(config)
        # Worker processes (distributed_executor_backend="mp") end when this object goes away.
        weakref.finalize(self, self.llm_engine.shutdown)

    def get_tokenizer(self):
        return self.llm_engine.tokenizer

    def generate(
        self,
        prompts: PromptInput | Sequence[PromptInput],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        lora_request: LoRARequest | Sequence[LoRARequest | None] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt; outputs come back in input order.

        A prompt is a string or ``{"prompt_token_ids": [...]}``. ``sampling_params`` is one
        ``SamplingParams`` for all prompts or a list with one per prompt; so is ``lora_request``
        (a :class:`LoRARequest`, or None for the base model; needs ``enable_lora=True``).
        """
        self._check_task("generate", "generate")
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        params = _one_per_prompt(sampling_params, SamplingParams, len(prompts))
        lora_requests = _lora_per_prompt(lora_request, len(prompts))
        # Only the final outputs are returned, so the engine need not build any before them.
        final_only = {id(p): dataclasses.replace(p, output_kind=RequestOutputKind.FINAL_ONLY) for p in params}
        params = [final_only[id(p)] for p in params]
        return self._run_requests(
            [_prompt_value(prompt) for prompt in prompts], params, use_tqdm, "Generating", lora_requests
        )

    def beam_search(
        self, prompts: PromptInput | Sequence[PromptInput], params: BeamSearchParams, use_tqdm: bool = False
    ) -> list[BeamSearchOutput]:
        """Beam search for each prompt; per prompt, the ``beam_width`` best beams, best first.

        The prompts' beams run together, batched like any other requests."""
        self._check_task("generate", "beam_search")
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        values = [_prompt_value(prompt) for prompt in prompts]
        outputs = self._run_requests(values, [params] * len(values), use_tqdm, "Beam search")
        tokenizer = self.llm_engine.tokenizer
        return [
            BeamSearchOutput([
                BeamSearchSequence(
                    tokens=[*output.prompt_token_ids, *beam.token_ids],
                    text=tokenizer.decode([*output.prompt_token_ids, *beam.token_ids], skip_special_tokens=True),
                    cum_logprob=beam.cumulative_logprob,
                    score=beam_score(beam.cumulative_logprob, len(beam.token_ids), params.length_penalty),
                    finish_reason=beam.finish_reason,
                )
                for beam in output.outputs
            ])
            for output in outputs
        ]

    def chat(
        self,
        messages: list[Message] | list[list[Message]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        chat_template: str | None = None,
        add_generation_prompt: bool = True,
    ) -> list[RequestOutput]:
        """Apply the tokenizer's chat template to one conversation (or a list of them) and generate."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        tokenizer = self.llm_engine.tokenizer
        prompts = []
        for conversation in conversations:
            prompt_token_ids = tokenizer.apply_chat_template(
                conversation,
                chat_template=chat_template,
                add_generation_prompt=add_generation_prompt,
                tokenize=True,
                return_dict=False,
            )
            prompts.append({"prompt_token_ids": list(prompt_token_ids)})
        return self.generate(prompts, sampling_params, use_tqdm)

    def embed(
        self,
        prompts: PromptInput | Sequence[PromptInput],
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        truncate_prompt_tokens: int | None = None,
        use_tqdm: bool = True,
    ) -> list[EmbeddingRequestOutput]:
        """The embedding of every prompt (``output.outputs.embedding``), in input order.

        Needs a model loaded with ``task="embed"``. ``truncate_prompt_tokens`` keeps each prompt's
        last tokens; a longer prompt without it is a ValueError.
        """
        self._check_task("embed", "embed")
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        params = _one_per_prompt(pooling_params, PoolingParams, len(prompts))
        token_ids = [self.llm_engine.tokenize(_prompt_value(prompt), truncate_prompt_tokens) for prompt in prompts]
        with tqdm(total=len(prompts), desc="Embedding", disable=not use_tqdm, unit="prompt") as progress:
            embeddings = self.llm_engine.embed(token_ids, params, on_batch=progress.update)
        return [
            EmbeddingRequestOutput(str(next(self._request_counter)), EmbeddingOutput(embedding), prompt_token_ids)
            for embedding, prompt_token_ids in zip(embeddings, token_ids)
        ]

    def _check_task(self, task: str, method: str) -> None:
        if self.task != task:
            raise ConfigError(f"LLM.{method}() needs a model loaded with task={task!r}; this one has task={self.task!r}")

    def _run_requests(
        self,
        prompts: list[str | list[int]],
        params: list,
        use_tqdm: bool,
        description: str,
        lora_requests: list[LoRARequest | None] | None = None,
    ):
        """Add one request per prompt, step until all finished; outputs in input order."""
        request_ids = []
        lora_requests = lora_requests or [None] * len(prompts)
        try:
            for prompt, prompt_params, lora in zip(prompts, params, lora_requests):
                request_id = str(next(self._request_counter))
                self.llm_engine.add_request(request_id, prompt, prompt_params, lora_request=lora)
                request_ids.append(request_id)
        except Exception:
            self.llm_engine.abort_request(request_ids)
            raise
        finished: dict[str, RequestOutput] = {}
        with tqdm(total=len(request_ids), desc=description, disable=not use_tqdm, unit="req") as progress:
            try:
                while self.llm_engine.has_unfinished_requests():
                    for output in self.llm_engine.step():
                        if output.finished:
                            finished[output.request_id] = output
                            progress.update(1)
            except BaseException:
                self.llm_engine.abort_request([r for r in request_ids if r not in finished])
                raise
        return [finished[request_id] for request_id in request_ids]


def _one_per_prompt(params, params_type: type, num_prompts: int) -> list:
    """``params`` (None for the defaults, one for all, or one per prompt) as a list with one per prompt."""
    if params is None:
        return [params_type()] * num_prompts
    if isinstance(params, params_type):
        return [params] * num_prompts
    if len(params) != num_prompts:
        raise ConfigError(
            f"got {len(params)} {params_type.__name__} for {num_prompts} prompts; give one, or one per prompt"
        )
    return list(params)


def _lora_per_prompt(lora_request, num_prompts: int) -> list[LoRARequest | None]:
    """``lora_request`` (None, one for all, or one per prompt) as a list with one per prompt."""
    if lora_request is None or isinstance(lora_request, LoRARequest):
        return [lora_request] * num_prompts
    if len(lora_request) != num_prompts:
        raise ConfigError(
            f"got {len(lora_request)} LoRA requests for {num_prompts} prompts; give one, or one per prompt"
        )
    return list(lora_request)


def _prompt_value(prompt: PromptInput) -> str | list[int]:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
        return list(prompt["prompt_token_ids"])
    if isinstance(prompt, dict) and "prompt" in prompt:
        return prompt["prompt"]
    raise ConfigError(
        f"a prompt must be a string, {{'prompt': str}} or {{'prompt_token_ids': [...]}}; got {type(prompt).__name__}"
    )
