"""KV-cache demand: requests getting longer fill the cache; more requests of the usual length
(a load spike) do not predict exhaustion; load-driven latency is not degradation."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from agent.checkpoint import to_dict
from learning.detectors import Finding, kv_cache_demand, performance_degradation
from learning.detectors.kv_cache import MIN_LENGTH_GROWTH, _demand
from learning.hysteresis import OPEN_AT
from learning.predict import HostAnalyzer
from learning.window import Window, window
from tests.factories import make_checkpoint

T0 = 1_780_000_000.0
DECODE_TOKENS_PER_S = 25.0  # each running sequence's share of the decode steps
PROMPT_TOKENS = 500.0
KV_CAPACITY_TOKENS = 80_000.0


def serve(
    duration_s: int,
    arrivals_per_s: Callable[[float], float],
    answer_tokens: Callable[[float], float],
    *,
    lengths: bool = False,
) -> list[dict[str, Any]]:
    """Return the checkpoints (every 5 s) of a toy server: requests arrive at `arrivals_per_s`
    with answers of `answer_tokens`, each decodes DECODE_TOKENS_PER_S, and holds its prompt
    and answer so far in the KV cache. Nothing waits: the cache is only watched. With
    `lengths`, the totals carry vLLM's output-length histogram (sum and count) too."""
    running: list[list[float]] = []  # [generated, answer length]
    due, generated_total, finished_total, finished_tokens = 0.0, 0.0, 0.0, 0.0
    cps = []
    for second in range(duration_s):
        due += arrivals_per_s(second)
        while due >= 1.0:
            running.append([0.0, answer_tokens(second)])
            due -= 1.0
        for seq in running:
            seq[0] += DECODE_TOKENS_PER_S
        generated_total += DECODE_TOKENS_PER_S * len(running)
        finished_total += sum(1 for g, n in running if g >= n)
        finished_tokens += sum(g for g, n in running if g >= n)
        running = [seq for seq in running if seq[0] < seq[1]]
        if second % 5 == 4:
            used = sum(PROMPT_TOKENS + g for g, _ in running)
            cp = _checkpoint(second, len(running), used, generated_total, finished_total)
            if lengths:
                cp["vllm"]["totals"]["finished_output_tokens"] = finished_tokens
                cp["vllm"]["totals"]["finished_output_requests"] = finished_total
            cps.append(cp)
    return cps


def _checkpoint(
    second: int, running: int, used_tokens: float, generated: float, finished: float
) -> dict[str, Any]:
    cp = to_dict(
        make_checkpoint(
            collected_at=T0 + second,
            kv_cache_usage_pct=min(100.0 * used_tokens / KV_CAPACITY_TOKENS, 100.0),
            requests_running=float(running),
            requests_waiting=0.0,
        )
    )
    cp["vllm"]["totals"] = {"generation_tokens": generated, "requests_finished": finished}
    return cp


def first_full_s(cps: list[dict[str, Any]]) -> float:
    full = [cp["collected_at"] for cp in cps if cp["vllm"]["kv_cache_usage_pct"] >= 100.0]
    return float(full[0]) - T0


def first_alarm_s(cps: list[dict[str, Any]]) -> float | None:
    analyzer = HostAnalyzer()
    for cp in cps:
        analyzer.add(cp)
        predictions = analyzer.analyze(cp["collected_at"]).predictions
        kv = [p for p in predictions if p.failure_type == "kv_cache_exhausted"]
        if kv and kv[0].probability >= OPEN_AT:
            return float(cp["collected_at"]) - T0
    return None


def demand(cps: list[dict[str, Any]], first: int = 6) -> Iterator[tuple[float, Finding | None]]:
    """kv_cache_demand at each checkpoint from `first` on, on the window up to it: (seconds
    since T0, finding)."""
    for i in range(first, len(cps)):
        w = window(cps[: i + 1])
        yield float(w.t[-1]) - T0, kv_cache_demand(w, w.t[-1])


def first_demand(cps: list[dict[str, Any]]) -> tuple[float, Finding] | None:
    return next(((s, f) for s, f in demand(cps) if f is not None), None)


def lengthening(second: float) -> float:
    """Answers of 300 tokens for five minutes, then twice as long every two minutes or so."""
    return 300.0 * 2.0 ** (max(second - 300.0, 0.0) / 130.0)


def test_it_predicts_a_full_cache_a_minute_ahead_when_requests_get_longer() -> None:
    cps = serve(900, lambda s: 2.0, lengthening)
    full_s = first_full_s(cps)
    alarm_s = first_alarm_s(cps)
    # Three minutes ahead here; the KV trend alone (without the lengths) gives about one.
    assert alarm_s is not None and full_s - alarm_s >= 120.0
    w = window([cp for cp in cps if cp["collected_at"] - T0 <= alarm_s])
    f = kv_cache_demand(w, w.t[-1])
    assert f is not None and f.failure_type == "kv_cache_exhausted"
    assert f.figures["request_length_growth"] >= MIN_LENGTH_GROWTH
    assert f.time_to_exhaustion_s is not None and f.time_to_exhaustion_s <= 300.0


def test_it_warns_a_minute_ahead_of_a_two_minute_shift_to_longer_requests() -> None:
    # Arrivals double and answers grow 2.5-fold together over two minutes (a new feature's
    # traffic): the cache fills two minutes after the shift began. Requests are compared
    # with their usual length, so the warning does not wait for a line through the last two
    # minutes to tilt (that gave 50 s here).
    def shift(second: float) -> float:
        return float(np.clip((second - 300.0) / 120.0, 0.0, 1.0))

    cps = serve(900, lambda s: 2.0 * (1.0 + shift(s)), lambda s: 300.0 * (1.0 + 1.5 * shift(s)))
    alarm_s = first_alarm_s(cps)
    assert alarm_s is not None and alarm_s > 300.0
    assert first_full_s(cps) - alarm_s >= 60.0


def test_the_finished_requests_own_lengths_confirm_or_veto_the_growth() -> None:
    # With vLLM's output-length histogram in the checkpoints, longer answers still warn early.
    cps = serve(900, lambda s: 2.0, lengthening, lengths=True)
    alarm_s = first_alarm_s(cps)
    assert alarm_s is not None and first_full_s(cps) - alarm_s >= 120.0
    # The same counters, but the histogram says the finished requests kept their length: the
    # growth the counters show is more requests running at once, not longer ones.
    for cp in cps:
        totals = cp["vllm"]["totals"]
        totals["finished_output_tokens"] = 300.0 * totals["finished_output_requests"]
    assert all(f is None for _, f in demand(cps, first=24))


def test_it_does_not_call_more_requests_of_the_usual_length_exhaustion() -> None:
    # Twice the requests for two minutes, ramped over 20 s: the cache doubles, and stops there.
    def spike(second: float) -> float:
        return 2.0 * (1.0 + float(np.clip((second - 300.0) / 20.0, 0.0, 1.0)) * (second < 420))

    cps = serve(600, spike, lambda s: 300.0)
    assert max(cp["vllm"]["kv_cache_usage_pct"] for cp in cps) < 100.0
    assert all(f is None for _, f in demand(cps, first=24))


def test_it_ignores_a_fresh_server_whose_first_requests_are_its_shortest() -> None:
    cps = serve(240, lambda s: 2.0, lambda s: 150.0 + 300.0 * (s % 7) / 6)
    assert all(f is None for _, f in demand(cps))


def test_it_ignores_a_fresh_server_whose_long_requests_have_not_finished_yet() -> None:
    # One answer in ten takes two minutes: for its first minutes the server finishes only the
    # short ones, and requests seem to get longer while the cache fills to its usual level.
    for lengths in (False, True):
        cps = serve(420, lambda s: 2.0, lambda s: 3000.0 if s % 10 == 0 else 200.0,
                    lengths=lengths)  # fmt: skip
        assert max(cp["vllm"]["kv_cache_usage_pct"] for cp in cps) < 100.0
        assert all(f is None for _, f in demand(cps))


def queued(n: int, spike_from: int, seed: int = 0) -> Window:
    """A host under a load swing whose queue backs up from `spike_from`: its TTFT (queue time
    included) soars with the queue, its ITL follows the running count as before."""
    rng = np.random.default_rng(seed)
    cps = []
    for i in range(n):
        spiking = i >= spike_from
        running = float(rng.integers(150, 200) if spiking else rng.integers(20, 80))
        waiting = float(rng.integers(20, 120) if spiking else rng.integers(0, 3))
        itl = (0.02 + 0.001 * running) * rng.lognormal(0, 0.1)
        ttft = 0.4 + (waiting * 0.3 if spiking else 0.0)
        cp = make_checkpoint(collected_at=T0 + 5 * i, requests_running=running,
                             requests_waiting=waiting, itl_p99_s=itl, ttft_p99_s=ttft)  # fmt: skip
        cps.append(to_dict(cp))
    # Earlier spikes in the history: the same load, served as fast.
    for i in range(20, 32):
        cps[i]["vllm"]["requests_running"] = float(rng.integers(150, 200))
        cps[i]["vllm"]["requests_waiting"] = float(rng.integers(20, 120))
        cps[i]["vllm"]["latency"]["itl"]["p99_s"] = 0.02 + 0.001 * cps[i]["vllm"][
            "requests_running"
        ] * float(rng.lognormal(0, 0.1))
    return window(cps)


def test_it_does_not_call_queueing_under_load_degradation() -> None:
    for seed in range(5):
        w = queued(120, spike_from=108, seed=seed)
        assert performance_degradation(w, w.t[-1]) is None


def test_it_speaks_once_the_growth_has_held_at_the_checkpoint_before_too() -> None:
    cps = serve(900, lambda s: 2.0, lengthening, lengths=True)
    held = []
    for i in range(6, len(cps)):
        w = window(cps[: i + 1])
        held.append(_demand(w, w.t[-1]) is not None)
        if kv_cache_demand(w, w.t[-1]) is not None:
            break
    # The growth first crossed its lines one checkpoint (5 s) earlier, and held since.
    assert held[-2:] == [True] * 2 and not held[-3]


def test_it_waits_for_the_cache_to_be_30_percent_full() -> None:
    # Fewer, longer requests: the growth is clear while the cache is still under 30 %, where a
    # healthy host's cache swings as much. It speaks from 30 %, still minutes ahead.
    cps = serve(1200, lambda s: 0.7, lengthening, lengths=True)
    first = first_demand(cps)
    assert first is not None and first[1].figures["kv_cache_usage_pct"] >= 30.0
    assert first_full_s(cps) - first[0] >= 120.0


def test_it_still_speaks_when_the_host_is_polled_every_16_seconds() -> None:
    # Checkpoints further apart than the 5 s it asks the growth to hold: the one before must
    # agree.
    cps = serve(900, lambda s: 2.0, lengthening, lengths=True)
    sparse = [cp for i, cp in enumerate(cps) if i % 3 == 0]
    for k, cp in enumerate(sparse):
        cp["collected_at"] += float(k)  # 16 s apart
    assert any(f is not None for _, f in demand(sparse, first=8))


def test_it_predicts_a_full_cache_under_bursty_traffic_too() -> None:
    # Arrivals swinging between 0.4 and 3.6 a second each minute while answers lengthen: the
    # cache fills in jerks, not as a steady rise, and the growth still shows.
    def bursty(second: float) -> float:
        return 2.0 * (1.0 + 0.8 * np.sign(np.sin(2 * np.pi * second / 60.0)))

    cps = serve(900, bursty, lengthening, lengths=True)
    first = first_demand(cps)
    assert first is not None and first_full_s(cps) - first[0] >= 45.0


def test_it_goes_quiet_when_the_cache_falls_well_below_its_rise() -> None:
    # A minute into the warning (the cache at 50 %) the traffic recedes: the newest reading
    # drops to 60 % of the one before, while the 90 s fit and the lengths still say it grows.
    cps = serve(900, lambda s: 2.0, lengthening, lengths=True)
    first = first_demand(cps)
    assert first is not None
    i = next(k for k, cp in enumerate(cps) if cp["collected_at"] - T0 == first[0]) + 14
    w = window(cps[: i + 1])
    assert kv_cache_demand(w, w.t[-1]) is not None  # as it was, it still speaks
    fallen = copy.deepcopy(cps[i])
    fallen["vllm"]["kv_cache_usage_pct"] = 0.6 * cps[i - 1]["vllm"]["kv_cache_usage_pct"]
    w = window([*cps[:i], fallen])
    assert kv_cache_demand(w, w.t[-1]) is None
