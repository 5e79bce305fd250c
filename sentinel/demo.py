"""`make demo`: the whole product on one machine, watching a simulated fleet.

1. Start the embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set).
2. Migrate, and create an operator account (its password is printed).
3. Start the simulated fleet and register its hosts.
4. Start the web server, a Celery worker, a Celery worker for training only, and Celery beat.
5. Print the URL; on Ctrl-C stop every process started here, in reverse order.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sentinel import embedded
from sentinel.processes import ProcessGroup

BASE_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEMO_SCENARIOS = (
    "healthy,kv_cache_exhaustion,memory_leak_oom,load_spike,"
    "engine_death,disk_fill,nccl_hang,thermal_throttling"
)
MANIFEST_TIMEOUT_S = 60.0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    data_dir = Path(os.getenv("SENTINEL_DATA_DIR", str(BASE_DIR / ".sentinel")))
    env = _environment(data_dir, args)
    group = ProcessGroup(log_dir=data_dir / "logs")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # Python leaves Ctrl-C ignored when the demo was started with SIGINT ignored (a shell's
    # background job, nohup, some test runners): Ctrl-C must still stop everything.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        password = _prepare_database(env, args.user)
        _start_fleet(group, env, data_dir, args)
        _start_control_plane(group, env, args)
        _banner(args, password, data_dir)
        return _watch(group)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        group.stop_all()


class DemoError(RuntimeError):
    pass


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scenario", default=DEMO_SCENARIOS)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--user", default="operator")
    return parser.parse_args(argv)


def _environment(data_dir: Path, args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "sentinel.settings")
    env.setdefault("POLL_INTERVAL_S", "2")
    env["SENTINEL_DATA_DIR"] = str(data_dir)
    if not env.get("DATABASE_URL"):
        print("starting the embedded PostgreSQL…", flush=True)
        env["DATABASE_URL"] = embedded.postgres_url(data_dir)
    if not env.get("REDIS_URL"):
        env["REDIS_URL"] = embedded.redis_url(data_dir)
    return env


def _prepare_database(env: dict[str, str], user: str) -> str:
    _manage(env, "migrate", "--no-input", "-v", "0")
    _manage(env, "train_patterns")  # the worker cold-starts the model if there is none yet
    output = _manage(env, "create_operator", user, "--staff")
    return output.rsplit("password ", 1)[-1].strip().strip("'")


def _start_fleet(
    group: ProcessGroup, env: dict[str, str], data_dir: Path, args: argparse.Namespace
) -> None:
    manifest = data_dir / "fleet.json"
    manifest.unlink(missing_ok=True)
    simulator = group.start(
        "simulator",
        [
            str(BIN / "sentinel-simulate"),
            "--hosts",
            str(args.hosts),
            "--seed",
            str(args.seed),
            "--scenario",
            args.scenario,
            "--manifest",
            str(manifest),
            "--log-dir",
            str(data_dir / "vllm-logs"),
        ],
        env,
    )
    deadline = time.monotonic() + MANIFEST_TIMEOUT_S
    while not manifest.exists():
        if simulator.process.poll() is not None or time.monotonic() > deadline:
            raise DemoError(f"the simulator did not start; see {data_dir}/logs/simulator.log")
        time.sleep(0.2)
    print(_manage(env, "register_fleet", str(manifest)).strip(), flush=True)


def _start_control_plane(
    group: ProcessGroup, env: dict[str, str], args: argparse.Namespace
) -> None:
    group.start(
        "web",
        [str(BIN / "daphne"), "-b", args.bind, "-p", str(args.port), "sentinel.asgi:application"],
        env,
    )
    celery = [str(BIN / "celery"), "-A", "sentinel", "worker", "-l", "info"]
    # Polling, prediction and healing share a worker; training has one of its own, so a
    # cold start (minutes of CPU) never holds the slots the live fleet needs.
    group.start(
        "worker",
        [*celery, "-n", "fleet@%h", "--concurrency", "2", "--queues", "celery,analysis,healing"],
        env,
    )
    group.start(
        "learner",
        [*celery, "-n", "learner@%h", "--concurrency", "1", "--queues", "learning"],
        env,
    )
    group.start("beat", [str(BIN / "celery"), "-A", "sentinel", "beat", "-l", "info"], env)


def _banner(args: argparse.Namespace, password: str, data_dir: Path) -> None:
    host = "localhost" if args.bind in ("127.0.0.1", "0.0.0.0") else args.bind
    print(
        f"\n  vLLM Sentinel is running: http://{host}:{args.port}/\n"
        f"  log in as {args.user!r} with password {password!r}\n"
        f"  {args.hosts} simulated hosts; process logs in {data_dir}/logs/\n"
        f"  Ctrl-C stops everything.\n",
        flush=True,
    )


def _watch(group: ProcessGroup) -> int:
    while True:
        exited = group.first_exited()
        if exited is not None:
            print(
                f"{exited.name} exited with {exited.process.returncode}; stopping the demo",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.5)


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DemoError(f"manage.py {args[0]} failed:\n{result.stderr.strip()}")
    return result.stdout


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
