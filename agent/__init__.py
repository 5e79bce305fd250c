"""The Sentinel agent: runs beside vLLM on each GPU host and serves checkpoints over HTTP."""

from importlib.metadata import PackageNotFoundError, version

try:
    AGENT_VERSION = version("vllm-sentinel")
except PackageNotFoundError:  # running from a source tree that was never installed
    AGENT_VERSION = "0+unknown"
