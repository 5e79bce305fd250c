"""The HTTP face of one simulated vLLM server: aiohttp on a port reserved like vLLM's.

vLLM binds its port early but listens only when startup is complete, so connections are
refused until then and again once the process exits. `VllmHttpServer.sync()` opens or
closes the listening site to match the simulation; the port itself never changes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from simulator import dev_ops
from simulator.engine import Phase, SimulatedVllm
from simulator.exposition import CONTENT_TYPE, MetricsPage
from simulator.startup import VLLM_VERSION
from simulator.vllm_metrics import HTTP_EXCLUDED_HANDLERS

SIM_KEY = web.AppKey("sim", SimulatedVllm)
PAGE_KEY = web.AppKey("page", MetricsPage)
DEV_PATHS = frozenset(
    {"/sleep", "/wake_up", "/is_sleeping", "/reset_prefix_cache", "/pause", "/resume",
     "/is_paused", "/server_info"}
)  # fmt: skip


class VllmHttpServer:
    def __init__(self, sim: SimulatedVllm, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.host = host
        self.page = MetricsPage(sim)
        self._sock = _reserve(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def sync(self) -> None:
        """Listen while the simulated server accepts connections; refuse them otherwise."""
        if self.sim.listening and self._site is None:
            await self._listen()
        elif not self.sim.listening and self._site is not None:
            await self._stop_listening()

    async def close(self) -> None:
        if self._site is not None:
            await self._stop_listening()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._sock.close()

    async def _listen(self) -> None:
        if self._runner is None:
            self._runner = web.AppRunner(make_app(self.sim, self.page), access_log=None)
            await self._runner.setup()
        self._site = web.SockSite(self._runner, self._sock)
        await self._site.start()

    async def _stop_listening(self) -> None:
        assert self._site is not None and self._runner is not None
        await self._site.stop()
        self._site = None
        # A process that exits drops its keep-alive connections too.
        server = self._runner.server
        for connection in server.connections if server else []:
            connection.force_close()
        self._sock = _reserve(self.host, self.port)


def _reserve(host: str, port: int) -> socket.socket:
    """Bind a socket without listening: the port is ours, connections are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def make_app(sim: SimulatedVllm, page: MetricsPage) -> web.Application:
    app = web.Application(middlewares=[_instrument])
    app[SIM_KEY] = sim
    app[PAGE_KEY] = page
    get, post = app.router.add_get, app.router.add_post
    get("/health", _health)
    app.router.add_route("*", "/ping", _health)
    get("/metrics", _metrics)
    get("/metrics/", _metrics)
    get("/version", _version)
    get("/v1/models", _models)
    get("/load", _load)
    post("/sleep", _sleep)
    post("/wake_up", _wake_up)
    get("/is_sleeping", _dev_json(dev_ops.is_sleeping))
    post("/reset_prefix_cache", _reset_prefix_cache)
    post("/pause", _pause)
    post("/resume", _dev_json(dev_ops.resume))
    get("/is_paused", _dev_json(dev_ops.is_paused))
    get("/server_info", _dev_json(dev_ops.server_info))
    return app


@web.middleware
async def _instrument(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer as FastAPI does for unknown paths and disabled dev routes; record HTTP metrics."""
    sim = request.app[SIM_KEY]
    started = time.perf_counter()
    if request.path in DEV_PATHS and not sim.dev_mode:
        return _detail(404, "Not Found")  # the route does not exist without dev mode
    try:
        response = await handler(request)
    except web.HTTPNotFound:
        return _detail(404, "Not Found")
    except web.HTTPMethodNotAllowed:
        return _detail(405, "Method Not Allowed")
    except dev_ops.DevOpError as exc:
        response = _detail(exc.status, str(exc))
    resource = request.match_info.route.resource
    path = resource.canonical if resource else ""
    if path and path not in HTTP_EXCLUDED_HANDLERS and sim.run is not None:
        duration = time.perf_counter() - started
        sizes = (request.content_length or 0, response.content_length or 0)
        sim.run.http.observe(path, request.method, response.status, duration, sizes, sim.now)
        sim.version += 1
    return response


def _detail(status: int, detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status)


async def _health(request: web.Request) -> web.Response:
    # V1 checks only its "engine dead" flag: a hung engine still answers 200.
    return web.Response(status=200 if request.app[SIM_KEY].phase is Phase.SERVING else 503)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[PAGE_KEY].body(), headers={"Content-Type": CONTENT_TYPE})


async def _version(request: web.Request) -> web.Response:
    return web.json_response({"version": VLLM_VERSION})


async def _models(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    assert sim.run is not None
    args = sim.run.args
    created = int(sim.now)
    model = {
        "id": args.model_name,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": args.model,
        "parent": None,
        "max_model_len": args.max_model_len,
        "permission": [
            {
                "id": f"modelperm-{sim.name}-{sim.runs}",
                "object": "model_permission",
                "created": created,
                "allow_create_engine": False,
                "allow_sampling": True,
                "allow_logprobs": True,
                "allow_search_indices": False,
                "allow_view": True,
                "allow_fine_tuning": False,
                "organization": "*",
                "group": None,
                "is_blocking": False,
            }
        ],
    }
    return web.json_response({"object": "list", "data": [model]})


async def _load(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    run = sim.run
    tracking = run is not None and run.args.enable_server_load_tracking
    load = run.running + run.waiting if tracking and run is not None else 0
    return web.json_response({"server_load": load})


async def _sleep(request: web.Request) -> web.Response:
    level = _int_query(request, "level", 1)
    dev_ops.sleep(request.app[SIM_KEY], level)
    return web.Response(status=200)


async def _wake_up(request: web.Request) -> web.Response:
    tags = request.query.getall("tags", []) or None
    dev_ops.wake_up(request.app[SIM_KEY], tags)
    return web.Response(status=200)


async def _reset_prefix_cache(request: web.Request) -> web.Response:
    dev_ops.reset_prefix_cache(request.app[SIM_KEY])
    return web.Response(status=200)


async def _pause(request: web.Request) -> web.Response:
    mode = request.query.get("mode", "abort")
    return web.json_response(dev_ops.pause(request.app[SIM_KEY], mode))


def _dev_json(op: Callable[[SimulatedVllm], dict[str, Any]]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(op(request.app[SIM_KEY]))

    return handler


def _int_query(request: web.Request, name: str, default: int) -> int:
    try:
        return int(request.query.get(name, default))
    except ValueError:
        raise dev_ops.DevOpError(400, f"{name} must be an integer") from None
