"""`make demo` starts the whole product and Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from django.conf import settings

from tests.e2e.conftest import ROOT, _test_database_url
from tests.ports import free_port

pytestmark = [pytest.mark.e2e]


def test_it_runs_the_demo_and_leaves_no_orphans_on_ctrl_c(transactional_db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import RUN_PREFIX

    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SENTINEL_REDIS_PREFIX": RUN_PREFIX,
        "SENTINEL_DATA_DIR": str(tmp_path),
    }
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "sentinel.demo", "--hosts", "2", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Started with SIGINT ignored, as a shell's background job or nohup starts it (and as
        # a test process may be after other tests): Python then leaves Ctrl-C ignored too.
        preexec_fn=_ignore_sigint,
    )
    try:
        banner = _read_until(demo, "Ctrl-C stops everything", timeout_s=60)
        assert f"http://localhost:{port}/" in banner
        assert "log in as 'operator' with password '" in banner
        children = psutil.Process(demo.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        for program in ("sentinel-simulate", "daphne", "celery", "worker", "beat"):
            assert program in names
        # Polling, prediction and healing in one worker; training in its own, so a cold start
        # never takes the slots the live fleet needs.
        assert "--queues celery,analysis,healing" in names
        assert "--queues learning" in names

        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        demo.stdout.close()  # type: ignore[union-attr]
    time.sleep(0.5)
    assert [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _read_until(process: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    deadline, seen = time.monotonic() + timeout_s, []
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            seen.append(line)
            if marker in line:
                return "".join(seen)
        elif process.poll() is not None:
            break
        else:
            time.sleep(0.1)
    raise AssertionError("the demo did not start:\n" + "".join(seen))
