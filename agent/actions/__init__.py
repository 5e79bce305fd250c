"""The actions the control plane may ask an agent to run, and nothing else.

    restart              restart vLLM with the same arguments
    restart_with_args    ... with engine arguments changed (a fixed list, typed, ranged)
    restart_with_env     ... with NCCL_* / PYTORCH_CUDA_ALLOC_CONF changed (an allowlist)
    reset_prefix_cache   vLLM's /reset_prefix_cache (development endpoints)
    sleep, wake_up       vLLM's /sleep and /wake_up (development endpoints, sleep mode)
    drain, resume        stop taking requests and let running ones finish; take them again
    free_gpu_memory      end GPU processes that are not the served vLLM
    run_validator        run the pre-startup checks now

To add one, copy the module of its nearest neighbour (one Action class: name, help, params,
run), then add it to REGISTRY below. Nothing is ever passed to a shell.
"""

from __future__ import annotations

from agent.actions.base import Action
from agent.actions.drain import Drain
from agent.actions.free_gpu_memory import FreeGpuMemory
from agent.actions.reset_prefix_cache import ResetPrefixCache
from agent.actions.restart import Restart
from agent.actions.restart_with_args import RestartWithArgs
from agent.actions.restart_with_env import RestartWithEnv
from agent.actions.resume import Resume
from agent.actions.run_validator import RunValidator
from agent.actions.sleep import Sleep
from agent.actions.wake_up import WakeUp

REGISTRY: dict[str, Action] = {
    action.name: action
    for action in (
        Restart(),
        RestartWithArgs(),
        RestartWithEnv(),
        ResetPrefixCache(),
        Sleep(),
        WakeUp(),
        Drain(),
        Resume(),
        FreeGpuMemory(),
        RunValidator(),
    )
}
