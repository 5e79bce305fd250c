"""`sentinel-simulate` starts a fleet, writes its manifest, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulator.main import parse_args


def test_it_runs_until_sigterm_and_writes_the_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "fleet.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.main", "--hosts", "3", "--seed", "5",
         "--scenario", "healthy,nccl_hang", "--manifest", str(manifest),
         "--log-dir", str(tmp_path / "logs"), "--speed", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not manifest.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        hosts = json.loads(manifest.read_text())["hosts"]
        time.sleep(1.5)  # a few simulated seconds: the startup logs reach the files
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.rstrip().endswith("stopped")
    assert [h["name"] for h in hosts] == ["gpu-01", "gpu-02", "gpu-03"]
    assert [h["scenario"] for h in hosts] == ["healthy", "nccl_hang", "healthy"]
    assert hosts[1]["gpu_count"] == 4 and hosts[1]["model"] == "meta-llama/Llama-3.1-70B-Instruct"
    assert all(h["token"].startswith("sim_") and h["agent_url"] for h in hosts)
    assert "vLLM server version" in (tmp_path / "logs" / "gpu-01.log").read_text()


def test_it_rejects_an_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--scenario", "healthy,meteor"])
    assert "no scenario 'meteor'" in capsys.readouterr().err
