"""The clients of one simulated server: Poisson arrivals and request shapes.

Lengths are log-normal, tuned so that a healthy host reproduces the reference sample's means
(prompts ~1,600 tokens, outputs ~360 tokens, ~41 % prefix-cache hits, 6 % `length`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MAX_TOKENS_CHOICES = (256, 512, 1024, 2048, 4096)
MAX_TOKENS_WEIGHTS = (1, 3, 4, 2, 1)


@dataclass(slots=True)
class LoadProfile:
    """How clients use one server; scenarios override fields under `[load]`."""

    rate_rps: float = 4.0
    swing: float = 0.2  # the rate moves +-20 % around rate_rps ...
    swing_period_s: float = 600.0  # ... over this period, so a calm host still shows life
    prompt_median: float = 1100.0
    prompt_sigma: float = 0.85
    output_median: float = 280.0
    output_sigma: float = 0.7
    prefix_share: float = 0.75  # requests that share a cached prefix
    max_tokens_share: float = 0.75  # requests that set max_tokens
    chat_share: float = 0.86
    abort_share: float = 0.007  # clients that disconnect mid-stream
    error_share: float = 0.0001
    rejected_share: float = 0.0025  # HTTP 400 before the engine (context length)
    client_timeout_s: float = 600.0  # clients give up on queued requests (OpenAI SDK default)


@dataclass(slots=True, eq=False)
class Request:
    arrival_t: float
    prompt_len: int
    cached_len: int  # prompt tokens found in the prefix cache
    output_len: int  # tokens generated before it finishes
    finish_reason: str
    max_tokens: int | None
    handler: str
    request_bytes: int
    generated: int = 0
    computed: int = 0  # tokens whose KV is computed while prefilling
    prefilled: bool = False
    blocks: int = 0
    need: int = 0  # blocks this tick's growth needs
    scheduled_t: float = -1.0
    first_token_t: float = -1.0
    last_token_t: float = -1.0
    done: bool = False


@dataclass(frozen=True, slots=True)
class Shape:
    """Multipliers the scenario applies to the load right now."""

    load: float = 1.0
    prompt: float = 1.0
    output: float = 1.0


class Workload:
    def __init__(self, rng: random.Random, profile: LoadProfile, block_size: int) -> None:
        self.rng = rng
        self.profile = profile
        self.block_size = block_size
        self.next_arrival_t: float | None = None

    def rate_rps(self, t: float, shape: Shape) -> float:
        p = self.profile
        swing = 1.0 + p.swing * math.sin(2 * math.pi * t / p.swing_period_s)
        return max(0.0, p.rate_rps * swing * shape.load)

    def arrivals(
        self, t0: float, t1: float, shape: Shape, max_model_len: int
    ) -> tuple[list[Request], list[float]]:
        """Return the requests arriving in [t0, t1) and the arrival times of rejected ones."""
        rate = self.rate_rps(t0, shape)
        if rate <= 0:
            self.next_arrival_t = None
            return [], []
        if self.next_arrival_t is None or self.next_arrival_t < t0:
            self.next_arrival_t = t0 + self.rng.expovariate(rate)
        accepted: list[Request] = []
        rejected: list[float] = []
        while self.next_arrival_t < t1:
            at = self.next_arrival_t
            if self.rng.random() < self.profile.rejected_share:
                rejected.append(at)
            else:
                accepted.append(self._request(at, shape, max_model_len))
            self.next_arrival_t = at + self.rng.expovariate(rate)
        return accepted, rejected

    def _request(self, at: float, shape: Shape, max_model_len: int) -> Request:
        p, rng = self.profile, self.rng
        prompt = int(rng.lognormvariate(math.log(p.prompt_median * shape.prompt), p.prompt_sigma))
        prompt = max(8, min(prompt, max_model_len - 16))
        max_tokens = None
        if rng.random() < p.max_tokens_share:
            max_tokens = rng.choices(MAX_TOKENS_CHOICES, MAX_TOKENS_WEIGHTS)[0]
        limit = min(max_tokens or max_model_len, max_model_len - prompt)
        natural = 1 + int(
            rng.lognormvariate(math.log(p.output_median * shape.output), p.output_sigma)
        )
        output, reason = (limit, "length") if natural >= limit else (natural, "stop")
        roll = rng.random()
        if roll < p.abort_share:
            output, reason = rng.randint(1, output), "abort"
        elif roll < p.abort_share + p.error_share:
            output, reason = rng.randint(1, output), "error"
        handler = CHAT if rng.random() < p.chat_share else COMPLETIONS
        return Request(
            arrival_t=at,
            prompt_len=prompt,
            cached_len=self._cached(prompt),
            output_len=output,
            finish_reason=reason,
            max_tokens=max_tokens,
            handler=handler,
            request_bytes=prompt * 4 + 180,
        )

    def _cached(self, prompt: int) -> int:
        if self.rng.random() >= self.profile.prefix_share:
            return 0
        # Whole blocks only, and never the last token: vLLM always computes at least one.
        cached = int(prompt * self.rng.uniform(0.3, 0.8)) // self.block_size * self.block_size
        return min(cached, (prompt - 1) // self.block_size * self.block_size)
