from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from agent.checkpoint import to_dict
from learning import offline, patterns
from tests.factories import GIB, make_checkpoint

T0 = 1_780_000_000.0


def checkpoints(host: str, rise_gib_per_step: float, n: int = 120) -> list[dict[str, Any]]:
    used = [(72 + rise_gib_per_step * i) * GIB for i in range(n)]
    return [
        to_dict(make_checkpoint(host=host, collected_at=T0 + 5 * i, gpu_memory_used_bytes=used[i]))
        for i in range(n)
    ]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = offline.main(args)
    out, err = capsys.readouterr()
    return status, out, err


def test_it_analyses_each_host_of_a_json_lines_file_and_counts_what_it_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [json.dumps(cp) for cp in checkpoints("leaky", 0.06) + checkpoints("steady", 0.0)]
    lines[10:10] = ["{not json", "[1, 2]", json.dumps({"host": "leaky", "collected_at": "x"})]
    path = tmp_path / "checkpoints.jsonl"
    path.write_text("\n".join(lines) + "\n")

    status, out, err = run([str(path)], capsys)

    assert status == 0
    result = json.loads(out)
    leaky, steady = result["hosts"]["leaky"], result["hosts"]["steady"]
    assert [p["failure_type"] for p in leaky["predictions"]] == ["cuda_oom"]
    assert leaky["predictions"][0]["time_to_failure_s"] > 0
    assert steady["predictions"] == [] and leaky["now"] == T0 + 5 * 119
    assert {f["metric"] for f in leaky["forecasts"]} >= {"gpu_mem_used_pct", "kv_cache_usage_pct"}
    assert result["left_out"] == {"not JSON": 1, "not an object": 1, "no usable collected_at": 1}
    assert "left out" in err


def test_a_replay_says_when_the_prediction_would_have_opened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "checkpoints.json"
    path.write_text(json.dumps(checkpoints("leaky", 0.06)))  # a JSON array this time

    status, out, _ = run([str(path), "--replay"], capsys)

    events = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and events[0]["event"] == "state" and events[0]["state"] == "serving"
    first = events[1]
    assert (first["host"], first["event"], first["failure_type"]) == ("leaky", "opened", "cuda_oom")
    # A warning: the GPU memory (79.1 of 80 GiB at the last checkpoint) is not full yet.
    assert T0 < first["at"] < T0 + 5 * 119 and first["probability"] >= 0.6


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the input is empty"),
        ('[{"host": "a"}, 3]', "1 no usable collected_at, 1 not an object"),
        ("not json at all\n", "1 not JSON"),
    ],
)
def test_input_with_no_checkpoint_is_an_error_that_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    status, out, err = run([str(path)], capsys)
    assert status == 2 and out == "" and message in err


def test_a_missing_file_or_an_unreadable_model_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run([str(tmp_path / "missing.json")], capsys)
    assert status == 2 and "missing.json" in err

    path, model = tmp_path / "cps.json", tmp_path / "model.bin"
    path.write_text(json.dumps(checkpoints("a", 0.0, n=3)))
    model.write_bytes(patterns.MAGIC + b' {"model_format": 1}\n')
    status, _, err = run([str(path), "--model", str(model)], capsys)
    assert status == 2 and "model.bin" in err


def test_now_may_be_iso_text_and_a_file_that_is_not_text_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cps.json"
    path.write_text(json.dumps(checkpoints("a", 0.06)))
    _, by_epoch, _ = run([str(path), "--now", str(T0 + 600)], capsys)
    _, by_iso, _ = run([str(path), "--now", "2026-05-28T20:36:40Z"], capsys)  # T0 + 600
    assert json.loads(by_iso) == json.loads(by_epoch)
    assert json.loads(by_iso)["hosts"]["a"]["now"] == T0 + 600
    with pytest.raises(SystemExit):
        offline.main([str(path), "--now", "soon"])
    assert "not a time" in capsys.readouterr().err

    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(128, 256)))
    status, out, err = run([str(binary)], capsys)
    assert status == 2 and out == "" and "not text (UTF-8)" in err


def test_it_writes_strict_json_where_a_figure_is_not_a_number() -> None:
    value = {"values": [1.5, math.nan], "band": (math.inf, -math.inf), "n": 3, "ok": True}
    assert (
        offline._json(value) == '{"values": [1.5, null], "band": [null, null], "n": 3, "ok": true}'
    )
