"""The offline API: ``LLM(model=...).generate(prompts, SamplingParams(...))``."""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.beam_search import beam_score
from pagedllm_core.engine.llm_engine import LLMEngine
from pagedllm_core.errors import ConfigError
from pagedllm_core.outputs import BeamSearchOutput, BeamSearchSequence, RequestOutput
from pagedllm_core.sampling_params import BeamSearchParams, SamplingParams

PromptInput = str | dict[str, Any]
Message = dict[str, str]


class LLM:
    """Generate for a batch of prompts with continuous batching over a paged KV cache.

    Keywords are :class:`~pagedllm_core.config.EngineConfig` fields (``model``, ``dtype``,
    ``max_model_len``, ``block_size``, ``kv_cache_memory``, ``max_num_seqs``,
    ``max_num_batched_tokens``, ``attention_backend``, ``seed``, ...). Without ``model`` the default
    model (SmolLM2-135M-Instruct) is used.
    """

    def __init__(self, model: str | None = None, **engine_settings: Any):
        self.llm_engine = LLMEngine(EngineConfig.build(model=model, **engine_settings))
        self._request_counter = itertools.count()
        # Worker processes (distributed_executor_backend="mp") end when this object goes away.
        weakref.finalize(self, self.llm_engine.shutdown)

    def get_tokenizer(self):
        return self.llm_engine.tokenizer

    def generate(
        self,
        prompts: PromptInput | Sequence[PromptInput],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        """Generate for every prompt; outputs come back in input order.

        A prompt is a string or ``{"prompt_token_ids": [...]}``. ``sampling_params`` is one
        ``SamplingParams`` for all prompts or a list with one per prompt.
        """
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        params = self._params_per_prompt(sampling_params, len(prompts))
        return self._run_requests([_prompt_value(prompt) for prompt in prompts], params, use_tqdm, "Generating")

    def beam_search(
        self, prompts: PromptInput | Sequence[PromptInput], params: BeamSearchParams, use_tqdm: bool = False
    ) -> list[BeamSearchOutput]:
        """Beam search for each prompt; per prompt, the ``beam_width`` best beams, best first.

        The prompts' beams run together, batched like any other requests."""
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

    @staticmethod
    def _params_per_prompt(sampling_params, num_prompts: int) -> list[SamplingParams]:
        if sampling_params is None:
            return [SamplingParams()] * num_prompts
        if isinstance(sampling_params, SamplingParams):
            return [sampling_params] * num_prompts
        if len(sampling_params) != num_prompts:
            raise ConfigError(
                f"got {len(sampling_params)} SamplingParams for {num_prompts} prompts; give one, or one per prompt"
            )
        return list(sampling_params)

    def _run_requests(self, prompts: list[str | list[int]], params: list, use_tqdm: bool, description: str):
        """Add one request per prompt, step until all finished; outputs in input order."""
        request_ids = []
        try:
            for prompt, prompt_params in zip(prompts, params):
                request_id = str(next(self._request_counter))
                self.llm_engine.add_request(request_id, prompt, prompt_params)
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
