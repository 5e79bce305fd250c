"""The lifecycle state tracker: where vLLM is, from its log lines, its errors and its endpoints.

Three inputs, one state:
- `feed_log(line)`, for every line vLLM writes: startup phases, sleep, shutdown and failure
  lines move the state at once, stamped with the line's read time, and the startup figures
  (model weights, KV cache, CUDA graphs, durations, version) are kept in `startup`.
- `on_error(error)`, for every error the exception monitor classifies: a fatal one moves the
  state to the failed state of its cause.
- `update(probe, ...)`, once per checkpoint: the endpoints and metrics decide what the logs
  cannot, and everything when there are no logs (attach mode).

Every change of state is added to the EventLog as a Transition.

Failures. A failure line (`EngineCore encountered a fatal error.`, `EngineDeadError`,
`EngineCore failed to start.`, ...) or an `engine_dead` error says the engine dies but not
why. The failure is pending until the next `update()`, so that the errors of the same
interval are in: its cause is the strongest classified error within a couple of minutes
of it (agent/failure_causes.py), and the state graph shows one edge, serving ->
failed_cuda_oom, rather than two. A cause that arrives even later still replaces a
causeless or weaker one. Errors alone never fail a server: vLLM survives many. A failure
seen in the logs or errors holds until vLLM is seen alive again: a new process's first line,
the process coming back, counters starting over, or /health 200 with tokens flowing.
A 503 from /health with nothing in the logs holds only while /health says so.

Rules of `update()`, in order:
1. A held failure stays (see above).
2. The logs win when they moved the state after the probe was sent (`now_epoch`).
3. Starting (per the logs) and not answering: the logged phase. The process gone: failed.
4. Draining or stopping (per the logs): so until the process exits, then STOPPED.
5. Unreachable: a timeout is DEGRADED; refused with the process alive is INITIALIZING
   (vLLM listens only once started); the process gone is STOPPED, or failed when vLLM was
   serving per its logs and logged no shutdown (a kill, the OOM killer).
6. Answering: agent/serving_health.py (dead, sleeping, degraded and why, serving).
"""

from __future__ import annotations

import dataclasses

from agent.checkpoint import ErrorEvent, Gpu, Startup, Transition
from agent.collectors.vllm import VllmProbe
from agent.events import EventLog
from agent.failure_causes import RecentCauses, cause_of, strength
from agent.lifecycle import STARTING_STATES, LifecycleState
from agent.lifecycle_lines import ALL_WAKE_TAGS, LineReading, read_line
from agent.loglines import LogLine
from agent.serving_health import PREEMPTING_FOR_S, PREEMPTING_PER_S, ServingHealth

S = LifecycleState
MAX_TRIGGER_CHARS = 500

_STARTUP_ORDER = (
    S.INITIALIZING,
    S.LOADING_WEIGHTS,
    S.PROFILING_MEMORY,
    S.ALLOCATING_KV_CACHE,
    S.CAPTURING_CUDA_GRAPHS,
    S.STARTING_API_SERVER,
)
_STOP_ORDER = (S.DRAINING, S.STOPPING, S.STOPPED)
_ANSWERING_STATES = frozenset({S.SERVING, S.DEGRADED, S.SLEEPING})
_PHASE_WORDS = {
    S.INITIALIZING: "initializing",
    S.LOADING_WEIGHTS: "loading the model weights",
    S.PROFILING_MEMORY: "profiling memory (torch.compile, warm-up run)",
    S.ALLOCATING_KV_CACHE: "allocating the KV cache",
    S.CAPTURING_CUDA_GRAPHS: "capturing CUDA graphs",
    S.STARTING_API_SERVER: "starting the API server",
}


@dataclasses.dataclass(frozen=True, slots=True)
class _Failure:
    state: LifecycleState
    at: float
    trigger: str


class StateTracker:
    def __init__(
        self,
        events: EventLog,
        stall_after_s: float = 15.0,
        *,
        preempting_per_s: float = PREEMPTING_PER_S,
        preempting_for_s: float = PREEMPTING_FOR_S,
    ) -> None:
        self._events = events
        self._health = ServingHealth(stall_after_s, preempting_per_s, preempting_for_s)
        self._causes = RecentCauses()
        self._state = S.UNKNOWN
        self._detail = ""
        self._clock = 0.0  # the latest epoch time seen, for errors that carry none
        self._pending: _Failure | None = None
        self._failure_held = False  # failed per the logs or errors, not just /health
        self._logged: LifecycleState | None = None  # the last phase the logs told
        self._logged_at = 0.0
        self._has_logs = False
        self._asleep_by_logs = False
        self._woken: set[str] = set()
        self._process_alive: bool | None = None
        self._startup: Startup | None = None

    @property
    def state(self) -> LifecycleState:
        return self._resolved(self._pending).state if self._pending else self._state

    @property
    def startup(self) -> Startup | None:
        """Return the latest startup figures (a copy), or None when no log reported any."""
        return dataclasses.replace(self._startup) if self._startup else None

    # ---------------------------------------------------------------- log lines

    def feed_log(self, line: LogLine) -> None:
        """Read one line of vLLM's output, in the order vLLM wrote them."""
        self._clock = max(self._clock, line.at)
        reading = read_line(line.text)
        if reading is None:
            return
        self._has_logs = True
        if reading.failure is not None:
            self._fail(reading.failure, line.at, line.text)
            return
        if self._is_new_process(reading):
            self._begin_process(line)
        elif self._failing:
            return  # the dying process's last words; only a new process's first lines count
        self._apply_figures(reading)
        if reading.woke_tags is not None:
            self._wake(reading.woke_tags, line)
        elif reading.state is S.SLEEPING:
            self._asleep_by_logs, self._woken = True, set()
            self._log_move(S.SLEEPING, line)
        elif reading.state is not None and self._accepts(reading.state):
            self._log_move(reading.state, line)
        self._apply_progress(reading)

    def _is_new_process(self, reading: LineReading) -> bool:
        if reading.new_process:
            return True
        # Without the version line (a log that starts late), the first configuration line.
        starting = self._logged in STARTING_STATES and not self._failing
        return reading.state is S.INITIALIZING and not starting

    @property
    def _failing(self) -> bool:
        return self._pending is not None or (self._state.is_failed and self._failure_held)

    def _begin_process(self, line: LogLine) -> None:
        if self._pending:
            self._commit_pending()  # the graph shows the failure before the restart
        self._clear_failure()
        self._health.reset()
        self._asleep_by_logs = False
        self._startup = Startup(started_at=line.at)
        self._log_move(S.INITIALIZING, line)

    def _accepts(self, state: LifecycleState) -> bool:
        """Return True when a line's phase moves the state on from where it is."""
        current = self._state
        if state in STARTING_STATES:
            if current in STARTING_STATES:
                # TP ranks log the same phases out of step: never go back.
                return _order(_STARTUP_ORDER, state) > _order(_STARTUP_ORDER, current)
            # Later startup phases while serving come from reconfiguration (elastic EP),
            # not from a new process: that one would have logged its first lines.
            return current not in _ANSWERING_STATES
        if state in _STOP_ORDER and current in _STOP_ORDER:
            return _order(_STOP_ORDER, state) > _order(_STOP_ORDER, current)
        return True

    def _wake(self, tags: frozenset[str], line: LogLine) -> None:
        self._woken |= tags
        if self._asleep_by_logs and self._woken >= ALL_WAKE_TAGS:
            self._asleep_by_logs = False
            self._log_move(S.SERVING, line)

    def _log_move(self, state: LifecycleState, line: LogLine) -> None:
        self._logged, self._logged_at = state, line.at
        self._detail = line.text.strip()[:MAX_TRIGGER_CHARS]
        self._move(state, line.at, line.text)

    def _apply_figures(self, reading: LineReading) -> None:
        if not reading.figures:
            return
        if self._startup is None:
            self._startup = Startup()  # the log began after vLLM started
        for name, value in reading.figures.items():
            setattr(self._startup, name, value)

    def _apply_progress(self, reading: LineReading) -> None:
        startup = self._startup
        if reading.progress_pct is not None and startup and startup.phase is reading.state:
            startup.progress_pct = reading.progress_pct

    # ---------------------------------------------------------------- errors

    def on_error(self, error: ErrorEvent) -> None:
        """Take one classified error from the exception monitor."""
        at = error.first_seen_at or self._clock
        if error.category == "engine_dead":
            self._fail(S.FAILED_ENGINE_DEAD, at, error.message)
            return
        cause = cause_of(error)
        if cause is None:
            return
        if self._failure_held and self._state.is_failed:
            if strength(cause) > strength(self._state):
                self._move(cause, at, error.message)  # the cause came after the checkpoint
            return
        # Not fatal by itself (many errors are survived): the cause if vLLM dies near it.
        self._causes.note(error, at)

    def _fail(self, causeless: LifecycleState, at: float, trigger: str) -> None:
        """vLLM is failing, per a log line or an error that does not say why.

        The failure waits for the next `update()`: the exception monitor reports the
        traceback that names the cause once it ends, often after these lines.
        """
        if not self._failing:
            self._pending = _Failure(causeless, at, trigger)

    def _resolved(self, failure: _Failure) -> _Failure:
        """Return `failure` with the cause the recent errors name, if they name one."""
        found = self._causes.cause_at(failure.at)
        if found is None:
            return failure
        cause, error = found
        return _Failure(cause, failure.at, error.message)

    def _commit_pending(self) -> None:
        assert self._pending is not None
        self._commit(self._resolved(self._pending))

    def _commit(self, failure: _Failure) -> None:
        self._pending = None
        self._failure_held = True
        self._causes.clear()
        self._detail = failure.trigger.strip()[:MAX_TRIGGER_CHARS]
        self._move(failure.state, failure.at, failure.trigger)

    def _clear_failure(self) -> None:
        self._pending = None
        self._failure_held = False
        self._causes.clear()

    # ---------------------------------------------------------------- the agent's own steps

    def validating(self, at: float) -> None:
        """The agent runs the pre-startup validator before it starts vLLM."""
        self._move(S.PRE_STARTUP, at, "pre-startup validation")

    def blocked(self, at: float, trigger: str) -> None:
        """A failed pre-startup check kept vLLM from starting: held until vLLM answers."""
        self._commit(_Failure(S.FAILED_CONFIG, at, trigger))

    # ---------------------------------------------------------------- checkpoints

    def update(
        self,
        probe: VllmProbe,
        *,
        process_alive: bool | None,
        gpus: list[Gpu],
        now_mono: float,
        now_epoch: float,
    ) -> tuple[LifecycleState, str]:
        """Return the state and why, given what the collectors saw in one collection.

        `now_epoch` is when the probe was sent (the checkpoint's `collected_at`): log lines
        read after it can only be newer than what the probe saw. `process_alive` is None when
        the vLLM process is not watched.
        """
        self._clock = max(self._clock, now_epoch)
        if self._pending:
            self._commit_pending()
        self._watch_process(process_alive)
        state, detail = self._decide(probe, process_alive, gpus, now_mono, now_epoch)
        self._detail = detail
        self._move(state, now_epoch, detail)
        return state, detail

    def _watch_process(self, alive: bool | None) -> None:
        came_back = alive is True and self._process_alive is False
        if alive is not None:
            self._process_alive = alive
        if came_back and (self._state.is_failed or self._state in _STOP_ORDER):
            # A new process: whatever the old one said is over.
            self._clear_failure()
            self._logged = None

    def _decide(
        self,
        probe: VllmProbe,
        alive: bool | None,
        gpus: list[Gpu],
        now_mono: float,
        now_epoch: float,
    ) -> tuple[LifecycleState, str]:
        if self._state.is_failed and self._failure_held:
            if not _seen_alive(probe):
                return self._state, self._detail
            self._clear_failure()
        if self._logged_at > now_epoch:
            return self._state, self._detail
        if probe.vllm is not None and self._logged in (*STARTING_STATES, S.STOPPED):
            self._logged = None  # it answers: that phase is over, whatever we missed
        logged = self._logged
        if logged in STARTING_STATES:
            return self._starting_state(logged, alive, now_epoch)
        if logged in (S.DRAINING, S.STOPPING):
            return self._stopping_state(logged, probe, alive)
        if logged is S.STOPPED:
            return S.STOPPED, self._detail
        if probe.vllm is None:
            return self._unreachable_state(probe, alive, now_epoch)
        state, detail = self._health.judge(probe.vllm, gpus, now_mono, self._asleep_by_logs)
        if state is S.FAILED_ENGINE_DEAD:
            return self._dead_state(detail, now_epoch)
        return state, detail

    def _starting_state(
        self, phase: LifecycleState, alive: bool | None, now_epoch: float
    ) -> tuple[LifecycleState, str]:
        if alive is False:
            return self._exited(f"the vLLM process exited while {_PHASE_WORDS[phase]}", now_epoch)
        detail = f"vLLM is {_PHASE_WORDS[phase]}"
        startup = self._startup
        if startup and startup.phase is phase and startup.progress_pct is not None:
            detail += f", {startup.progress_pct:.0f} %"
        return phase, detail

    def _stopping_state(
        self, phase: LifecycleState, probe: VllmProbe, alive: bool | None
    ) -> tuple[LifecycleState, str]:
        refused_unwatched = probe.vllm is None and probe.refused and alive is None
        if alive is False or refused_unwatched:
            self._logged = S.STOPPED
            return S.STOPPED, "the vLLM process exited after its shutdown"
        return phase, self._detail

    def _unreachable_state(
        self, probe: VllmProbe, alive: bool | None, now_epoch: float
    ) -> tuple[LifecycleState, str]:
        reason = probe.missing.get("vllm", "vLLM is unreachable")
        if probe.timed_out:
            return S.DEGRADED, reason
        if alive is True:
            return S.INITIALIZING, f"the vLLM process is alive; {reason}"
        if alive is False and self._has_logs and self._state in _ANSWERING_STATES:
            return self._exited(f"the vLLM process exited without logging why; {reason}", now_epoch)
        return S.STOPPED, f"{reason}; no vLLM process"

    def _exited(self, trigger: str, now_epoch: float) -> tuple[LifecycleState, str]:
        """The process is gone without a shutdown: failed, of the recent errors' cause."""
        self._commit(self._resolved(_Failure(S.FAILED_OTHER, now_epoch, trigger)))
        return self._state, self._detail

    def _dead_state(self, detail: str, now_epoch: float) -> tuple[LifecycleState, str]:
        failure = self._resolved(_Failure(S.FAILED_ENGINE_DEAD, now_epoch, detail))
        if failure.state is S.FAILED_ENGINE_DEAD:
            return failure.state, detail  # /health alone: it holds only while /health says so
        # An engine death after a root cause keeps the root cause's state.
        self._commit(failure)
        return self._state, self._detail

    # ---------------------------------------------------------------- transitions

    def _move(self, state: LifecycleState, at: float, trigger: str) -> None:
        if state is self._state:
            return
        transition = Transition(
            id=0,
            at=at,
            from_state=self._state,
            to_state=state,
            trigger=trigger.strip()[:MAX_TRIGGER_CHARS],
        )
        self._events.add(transition)
        self._state = state
        self._note_phase(state, at)

    def _note_phase(self, state: LifecycleState, at: float) -> None:
        startup = self._startup
        if startup is None:
            return
        if state in STARTING_STATES:
            startup.phase, startup.progress_pct = state, None
        elif state is S.SERVING and startup.phase is not None:
            startup.phase, startup.progress_pct = None, None
            startup.serving_at = startup.serving_at or at


def _seen_alive(probe: VllmProbe) -> bool:
    """Return True when the probe shows a live engine: counters anew, or tokens with /health ok."""
    vllm = probe.vllm
    if vllm is None:
        return False
    return vllm.restarted or (vllm.health.ok and vllm.forward_progress is True)


def _order(order: tuple[LifecycleState, ...], state: LifecycleState) -> int:
    # PRE_STARTUP (the validator's) comes before every phase vLLM logs.
    return order.index(state) if state in order else -1
