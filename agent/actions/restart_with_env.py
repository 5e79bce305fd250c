"""restart_with_env: restart vLLM with NCCL, PyTorch allocator or vLLM logging settings changed.

Only the variables below, each with the values it takes; null unsets one.
"""

from __future__ import annotations

from typing import Any

from agent.actions.base import Action, ActionContext, ActionError, Param
from agent.control import ControlError

ZERO_ONE = ("0", "1")


class RestartWithEnv(Action):
    name = "restart_with_env"
    help = "Restart vLLM with changed NCCL, allocator or logging environment; null unsets."
    needs_a_param = True
    params = {
        "NCCL_P2P_DISABLE": Param("str", "1 disables peer-to-peer transfers", choices=ZERO_ONE,
                                  nullable=True),
        "NCCL_IB_DISABLE": Param("str", "1 disables InfiniBand", choices=ZERO_ONE, nullable=True),
        "NCCL_SHM_DISABLE": Param("str", "1 disables shared-memory transport", choices=ZERO_ONE,
                                  nullable=True),
        "NCCL_CUMEM_HOST_ENABLE": Param("str", "cuMem host allocations", choices=ZERO_ONE,
                                        nullable=True),
        "NCCL_DEBUG": Param("str", "NCCL log level",
                            choices=("VERSION", "WARN", "INFO", "TRACE"), nullable=True),
        "NCCL_SOCKET_IFNAME": Param("str", "network interfaces for NCCL sockets",
                                    pattern=r"[\^=]?[A-Za-z0-9_.:-]{1,32}(,[A-Za-z0-9_.:-]{1,32})*",
                                    nullable=True),
        "PYTORCH_CUDA_ALLOC_CONF": Param("str", "PyTorch CUDA allocator settings",
                                         pattern=r"[a-z_]+:[A-Za-z0-9.]+(,[a-z_]+:[A-Za-z0-9.]+)*",
                                         nullable=True),
        # vLLM's logging, which the monitor reads (the validator's fixes).
        "VLLM_LOGGING_LEVEL": Param("str", "vLLM log level; above INFO hides the stats line",
                                    choices=("DEBUG", "INFO", "WARNING", "ERROR"), nullable=True),
        "VLLM_LOG_STATS_INTERVAL": Param("str", "seconds between stats lines",
                                         pattern=r"[0-9]{1,4}(\.[0-9]+)?", nullable=True),
        "VLLM_CONFIGURE_LOGGING": Param("str", "0 hands logging to the application",
                                        choices=ZERO_ONE, nullable=True),
    }  # fmt: skip

    def refusal(self, ctx: ActionContext, params: dict[str, Any]) -> str | None:
        return ctx.vllm.restart_refusal(args=False, env=True)

    async def run(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await ctx.vllm.restart(env=params)
        except ControlError as exc:
            raise ActionError(str(exc)) from None
        return {**result, "env": params}
