"""The server's embedding engine: one thread runs batches while asyncio callers wait on futures.

Requests that arrive while a batch runs are embedded together in the next one. Only the thread
touches the model; callers tokenize in worker threads and exchange plain lists with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from dataclasses import dataclass

from pagedllm_core.engine.async_engine import EngineDeadError, EngineStats
from pagedllm_core.pooling.engine import EmbeddingEngine
from pagedllm_core.pooling.params import PoolingParams

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    token_ids: list[int]
    params: PoolingParams
    result: concurrent.futures.Future


class AsyncEmbeddingEngine:
    """Embeds for many concurrent callers from one :class:`EmbeddingEngine` on a background thread.

    It answers the server's engine surface (``tokenizer``, ``max_model_len``, ``stats``,
    ``is_running``, ``check_health``, ``shutdown``) like :class:`~pagedllm_core.engine.async_engine.AsyncLLMEngine`.
    """

    def __init__(self, engine: EmbeddingEngine):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.max_model_len = engine.max_model_len
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._num_running = 0
        self._dead_error: EngineDeadError | None = None
        self._thread = threading.Thread(target=self._run, name="pagedllm-embedding-loop", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config, pooling) -> AsyncEmbeddingEngine:
        """Load the model for ``config`` (an ``EngineConfig``) and ``pooling`` (a ``PoolingConfig``)."""
        return cls(EmbeddingEngine(config, pooling))

    def tokenize(self, prompt: str | list[int], truncate_prompt_tokens: int | None = None) -> list[int]:
        """:meth:`EmbeddingEngine.tokenize`; safe from worker threads (it does not touch the model)."""
        return self.engine.tokenize(prompt, truncate_prompt_tokens)

    def check_params(self, params: PoolingParams) -> None:
        self.engine.check_params(params)

    async def embed(self, prompts: list[list[int]], params: PoolingParams) -> list[list[float]]:
        """Embeddings of tokenized prompts; cancelling the caller drops those not yet started."""
        self.check_health()
        jobs = [_Job(token_ids, params, concurrent.futures.Future()) for token_ids in prompts]
        for job in jobs:
            self._jobs.put(job)
        try:
            return list(await asyncio.gather(*(asyncio.wrap_future(job.result) for job in jobs)))
        finally:
            for job in jobs:
                job.result.cancel()

    def stats(self) -> EngineStats:
        return EngineStats(num_running_requests=self._num_running, num_waiting_requests=self._jobs.qsize())

    @property
    def is_running(self) -> bool:
        return self._dead_error is None

    def check_health(self) -> None:
        if self._dead_error is not None:
            raise self._dead_error

    def shutdown(self, timeout: float | None = None) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            jobs = [self._jobs.get()]
            while len(jobs) < self.engine.config.max_num_seqs and not self._jobs.empty():
                jobs.append(self._jobs.get())
            stopping = None in jobs
            live = [job for job in jobs if job is not None and job.result.set_running_or_notify_cancel()]
            if live:
                self._run_batch(live)
            if stopping:
                break
        self._dead_error = EngineDeadError("the embedding engine has been shut down")
        while not self._jobs.empty():
            job = self._jobs.get()
            if job is not None and job.result.set_running_or_notify_cancel():
                job.result.set_exception(self._dead_error)

    def _run_batch(self, jobs: list[_Job]) -> None:
        self._num_running = len(jobs)
        try:
            embeddings = self.engine.embed([job.token_ids for job in jobs], [job.params for job in jobs])
        except Exception as error:  # noqa: BLE001 - the batch's callers get the error; the loop goes on
            logger.exception("embedding batch failed")
            for job in jobs:
                job.result.set_exception(error)
        else:
            for job, embedding in zip(jobs, embeddings):
                job.result.set_result(embedding)
        finally:
            self._num_running = 0
