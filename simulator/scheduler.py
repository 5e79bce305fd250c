"""The V1 scheduler of one engine, advanced a tick (many engine steps) at a time.

1. Admit waiting requests in FCFS order while `max_num_seqs` allows and the KV pool holds
   their whole input (`--scheduler-reserve-full-isl`).
2. Size the step: decode sequences plus a chunked-prefill share of `max_num_batched_tokens`;
   the perf model gives its duration, so the tick holds k steps.
3. Grow every decoding request by up to k tokens; when the pool runs dry, preempt the last
   running request (free its blocks, recompute it later: V1's only policy).
4. Spend the prefill budget in order; a request whose prefill completes emits a token.
5. Record what the steps produced into the engine's stats, finish requests, free blocks.

Within a tick every step has the same shape; ticks are short (0.25 s) next to what the
metrics are read at, and this keeps a host's tick to a loop over its running requests.
"""

from __future__ import annotations

from collections import deque

from simulator.engine_args import EngineArgs
from simulator.perf import PerfModel
from simulator.stats import EngineStats
from simulator.workload import Request


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Scheduler:
    def __init__(
        self, args: EngineArgs, num_gpu_blocks: int, perf: PerfModel, stats: EngineStats
    ) -> None:
        self.bs = args.block_size
        self.max_num_seqs = args.max_num_seqs or 256
        self.mnbt = args.max_num_batched_tokens or 2048
        self.prefix_caching = args.enable_prefix_caching
        self.usable_blocks = num_gpu_blocks - 1  # block 0 is vLLM's null block
        self.free_blocks = self.usable_blocks
        self.watermark_blocks = int(args.watermark * num_gpu_blocks)
        self.perf = perf
        self.stats = stats
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.step_carry = 0.0
        self.step_tokens = 0  # tokens in the last step's batch: how hard the GPU works
        self.prefix_cold_until = -1.0  # after /reset_prefix_cache nothing hits for a while
        self.finished: list[Request] = []  # since the engine last collected them

    @property
    def kv_usage(self) -> float:
        return 1.0 - self.free_blocks / self.usable_blocks

    def tick(self, t: float, dt: float, slowdown: float, admit: bool = True) -> float:
        """Advance [t, t + dt); return the seconds of it the GPU spent computing."""
        if admit:
            self._admit(t)
        decode = [r for r in self.running if r.prefilled]
        prefill = [r for r in self.running if not r.prefilled]
        pending = sum(r.prompt_len + r.generated - r.computed for r in prefill)
        chunk = min(pending, max(0, self.mnbt - len(decode)))
        self.step_tokens = len(decode) + chunk
        if not decode and not chunk:
            self.step_carry = 0.0
            return 0.0
        context = (self.usable_blocks - self.free_blocks) * self.bs
        step_s = self.perf.step_s(len(decode), chunk, context) * slowdown
        steps = self.step_carry + dt / step_s
        k = int(steps)
        self.step_carry = steps - k
        if k == 0:
            return dt
        self._grow_or_preempt(decode, k, t)
        per_step = [0] * k
        self._prefill([r for r in prefill if not r.done], k * chunk, chunk, t, dt, per_step)
        self._decode([r for r in decode if not r.done], k, t, dt, step_s, per_step)
        iteration = self.stats.hist["vllm:iteration_tokens_total"]
        for tokens in per_step:
            iteration.observe(tokens)
        self.running = [r for r in self.running if not r.done]
        return min(dt, k * step_s)

    def _admit(self, t: float) -> None:
        stats = self.stats
        while self.waiting and len(self.running) < self.max_num_seqs:
            r = self.waiting[0]
            need = _ceil_div(r.prompt_len + r.generated + 1, self.bs)
            if need > self.free_blocks - self.watermark_blocks:
                break  # FCFS: the head of the queue blocks everyone behind it
            self.waiting.popleft()
            self.free_blocks -= need
            r.blocks = need
            cached = r.cached_len if self.prefix_caching and t >= self.prefix_cold_until else 0
            stats.prefix_queries += r.prompt_len + r.generated
            stats.prefix_hits += cached
            r.computed = cached
            r.done = False
            if r.scheduled_t < 0:
                r.scheduled_t = t
            self.running.append(r)

    def _grow_or_preempt(self, decode: list[Request], k: int, t: float) -> None:
        need = 0
        for r in decode:
            grown = r.prompt_len + r.generated + min(k, r.output_len - r.generated)
            r.need = max(0, _ceil_div(grown, self.bs) - r.blocks)
            need += r.need
        while need > self.free_blocks and self.running:
            victim = self.running.pop()
            need -= victim.need if victim.prefilled else 0
            self._preempt(victim)
        self.free_blocks -= need
        for r in decode:
            if not r.done:
                r.blocks += r.need

    def _preempt(self, r: Request) -> None:
        self.free_blocks += r.blocks
        r.blocks = r.need = r.computed = 0
        r.prefilled = False
        r.done = True  # out of this tick; `_admit` will take it back
        self.stats.preemptions += 1
        self.waiting.appendleft(r)

    def _prefill(
        self,
        prefill: list[Request],
        budget: int,
        chunk: int,
        t: float,
        dt: float,
        per_step: list[int],
    ) -> None:
        k = len(per_step)
        used = 0
        for r in prefill:
            if used >= budget:
                break
            take = min(r.prompt_len + r.generated - r.computed, budget - used)
            r.computed += take
            used += take
            if r.computed >= r.prompt_len + r.generated:
                step = min(k - 1, _ceil_div(used, chunk) - 1)
                r.prefilled = True
                self._first_output(r, step, t + (step + 1) * dt / k, per_step)

    def _first_output(self, r: Request, step: int, at: float, per_step: list[int]) -> None:
        """Emit the token a completed prefill produces: the first one, or one after recompute."""
        stats = self.stats
        if r.generated == 0:
            stats.hist["vllm:time_to_first_token_seconds"].observe(at - r.arrival_t)
            r.first_token_t = at
            stats.prompt_tokens += r.prompt_len
            stats.prompt_by_source["local_compute"] += r.prompt_len - r.cached_len
            stats.prompt_by_source["local_cache_hit"] += r.cached_len
            per_step[step] += r.prompt_len
        else:
            # The preemption gap lands in ITL, as in vLLM.
            stats.hist["vllm:inter_token_latency_seconds"].observe(at - r.last_token_t)
        r.generated += 1
        stats.generation_tokens += 1
        per_step[step] += 1
        r.last_token_t = at
        if r.generated >= r.output_len:
            self._finish(r, at)

    def _decode(
        self, decode: list[Request], k: int, t: float, dt: float, step_s: float, per_step: list[int]
    ) -> None:
        itl = self.stats.hist["vllm:inter_token_latency_seconds"]
        ends = [0] * (k + 1)  # ends[m]: requests that produced m tokens this tick
        produced = 0
        for r in decode:
            m = min(k, r.output_len - r.generated)
            itl.observe(step_s, m)
            r.generated += m
            produced += m
            ends[m] += 1
            r.last_token_t = t + dt * m / k
            if r.generated >= r.output_len:
                self._finish(r, r.last_token_t)
        self.stats.generation_tokens += produced
        active = sum(ends[1:])
        for step in range(k):
            per_step[step] += active
            active -= ends[step + 1]

    def _finish(self, r: Request, at: float) -> None:
        r.done = True
        self.free_blocks += r.blocks
        r.blocks = 0
        self.stats.finished[r.finish_reason] += 1
        self.finished.append(r)
        _observe_finished(self.stats, r, at)

    def expire(self, t: float, timeout_s: float) -> int:
        """Drop waiting requests whose clients gave up after `timeout_s`; return how many.

        The queue is oldest-first, so only its head needs looking at.
        """
        dropped = 0
        while self.waiting and t - self.waiting[0].arrival_t > timeout_s:
            r = self.waiting.popleft()
            dropped += 1
            if r.generated:  # a preempted request had streamed tokens: vLLM counts the abort
                r.finish_reason = "abort"
                self._finish(r, t)
        return dropped

    def abort_all(self, t: float) -> int:
        """Abort every request (pause or sleep with mode=abort); return how many there were.

        Requests that already streamed tokens finish with reason `abort`; the others never
        reached the finished-request histograms, so they are dropped without a trace.
        """
        dropped = len(self.running) + len(self.waiting)
        for r in self.running:
            if r.generated:
                r.finish_reason = "abort"
                self._finish(r, t)
            self.free_blocks += r.blocks
            r.blocks = 0
        self.running, self.waiting = [], deque()
        return dropped


def _observe_finished(stats: EngineStats, r: Request, end: float) -> None:
    h = stats.hist
    first = r.first_token_t
    h["vllm:e2e_request_latency_seconds"].observe(end - r.arrival_t)
    h["vllm:request_queue_time_seconds"].observe(r.scheduled_t - r.arrival_t)
    h["vllm:request_prefill_time_seconds"].observe(first - r.scheduled_t)
    h["vllm:request_decode_time_seconds"].observe(end - first)
    h["vllm:request_inference_time_seconds"].observe(end - r.scheduled_t)
    tpot = (end - first) / (r.generated - 1) if r.generated > 1 else 0.0
    h["vllm:request_time_per_output_token_seconds"].observe(tpot)
    h["vllm:request_prompt_tokens"].observe(r.prompt_len)
    h["vllm:request_generation_tokens"].observe(r.generated)
    h["vllm:request_max_num_generation_tokens"].observe(r.generated)
    h["vllm:request_params_n"].observe(1)
    if r.max_tokens is not None:
        h["vllm:request_params_max_tokens"].observe(r.max_tokens)
    h["vllm:request_prefill_kv_computed_tokens"].observe(r.prompt_len - r.cached_len)
