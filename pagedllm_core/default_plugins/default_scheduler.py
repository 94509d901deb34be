"""The ``default`` scheduler: first-come-first-served continuous batching with recompute preemption."""

from __future__ import annotations

from collections import deque

from pagedllm_core.engine.request import Request, RequestStatus
from pagedllm_core.engine.scheduler import ScheduledRequest, Scheduler, SchedulerOutput
from pagedllm_core.hookspecs import hookimpl


class ContinuousBatchingScheduler(Scheduler):
    """Runs every running request each step, then admits waiting ones while budget and blocks allow.

    Running requests get their remaining tokens (one when decoding, a chunk of the prompt when
    prefilling) under ``max_num_batched_tokens``. A waiting request starts after the blocks of its
    longest prefix found in the prefix cache. When the pool cannot hold a running request's next
    tokens, the most recently arrived running request is preempted: its blocks are freed and it goes
    back to the front of the queue to be recomputed later, which gives identical results (and,
    with prefix caching, usually finds its own freed blocks still cached).
    """

    def __init__(self, config, kv_cache_manager):
        super().__init__(config, kv_cache_manager)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    @property
    def num_running_requests(self) -> int:
        return len(self.running)

    @property
    def num_waiting_requests(self) -> int:
        return len(self.waiting)

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def add_request(self, request: Request) -> None:
        self.waiting.append(request)

    def finish_requests(self, request_ids: list[str], status: RequestStatus) -> list[Request]:
        wanted = set(request_ids)
        finished = [r for r in (*self.running, *self.waiting) if r.request_id in wanted]
        for request in finished:
            request.status = status
            self.kv_cache_manager.free(request)
        self.running = [r for r in self.running if r.request_id not in wanted]
        self.waiting = deque(r for r in self.waiting if r.request_id not in wanted)
        return finished

    def schedule(self) -> SchedulerOutput:
        output = SchedulerOutput()
        token_budget = self.config.max_num_batched_tokens

        index = 0
        while index < len(self.running) and token_budget > 0:
            request = self.running[index]
            num_new_tokens = min(request.num_tokens - request.num_computed_tokens, token_budget)
            while not self.kv_cache_manager.allocate_slots(request, num_new_tokens):
                victim = self.running.pop()
                self._preempt(victim)
                output.preempted.append(victim)
                if victim is request:
                    break
            else:
                output.scheduled.append(self._scheduled(request, num_new_tokens))
                token_budget -= num_new_tokens
                index += 1

        # Admit new work only when nothing had to be preempted: the pool is known to be tight otherwise.
        while not output.preempted and self.waiting and token_budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting[0]
            cached_block_ids = self.kv_cache_manager.find_cached_blocks(request)
            num_cached_tokens = len(cached_block_ids) * self.kv_cache_manager.block_size
            num_new_tokens = request.num_tokens - num_cached_tokens
            if num_new_tokens > token_budget:
                if not self.config.enable_chunked_prefill:
                    break
                num_new_tokens = token_budget
            if not self.kv_cache_manager.allocate_slots(request, num_new_tokens, cached_block_ids):
                break
            request.num_computed_tokens = num_cached_tokens
            self.waiting.popleft()
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            output.scheduled.append(self._scheduled(request, num_new_tokens))
            token_budget -= num_new_tokens

        output.block_copies = self.kv_cache_manager.take_pending_copies()
        return output

    def _scheduled(self, request: Request, num_new_tokens: int) -> ScheduledRequest:
        return ScheduledRequest(request, num_new_tokens, self.kv_cache_manager.block_tables[request.request_id])

    def _preempt(self, request: Request) -> None:
        self.num_preemptions += 1
        self.kv_cache_manager.free(request)
        request.num_computed_tokens = 0
        request.status = RequestStatus.PREEMPTED
        self.waiting.appendleft(request)

    def update_from_output(self, output: SchedulerOutput, sampled_token_ids: list[list[int]]) -> list[Request]:
        sampled = iter(sampled_token_ids)
        progressed = []
        for item in output.scheduled:
            request = item.request
            num_samples = item.num_samples
            request.num_computed_tokens += item.num_new_tokens
            if not num_samples:
                continue
            first_token, *sibling_tokens = next(sampled)
            # Siblings share every block computed so far; each then diverges with its own first token.
            siblings = [request.fork(index) for index in range(1, len(sibling_tokens) + 1)]
            for sibling, token_id in zip(siblings, sibling_tokens):
                self.kv_cache_manager.fork(request, sibling)
                self.running.append(sibling)
                sibling.append_output_token(token_id)
            request.num_pending_forks = 0
            request.append_output_token(first_token)
            progressed.extend([request, *siblings])
        for request in progressed:
            if request.is_finished:
                self.kv_cache_manager.free(request)
        if any(request.is_finished for request in progressed):
            self.running = [r for r in self.running if not r.is_finished]
        return progressed


@hookimpl
def register_schedulers(register):
    register("default", ContinuousBatchingScheduler, "FCFS continuous batching, chunked prefill, recompute preemption")
