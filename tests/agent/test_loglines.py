from __future__ import annotations

import pytest

from agent.loglines import ParsedLine, parse


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "(EngineCore_DP0 pid=812) ERROR 11-27 10:04:31 [core.py:708] "
            "EngineCore failed to start.",
            ParsedLine("ERROR", "EngineCore_DP0", 812, "EngineCore failed to start."),
        ),
        (
            "INFO 11-27 10:00:00 [api_server.py:1] vLLM API server version 0.9.2",
            ParsedLine("INFO", None, None, "vLLM API server version 0.9.2"),
        ),
        (
            "(VllmWorker rank=1 pid=77) WARNING 01-02 03:04:05.123 [x.py:9] slow",
            ParsedLine("WARNING", "VllmWorker", 77, "slow"),
        ),
        (
            "INFO:     Application startup complete.",
            ParsedLine("INFO", None, None, "Application startup complete."),
        ),
        (
            "(APIServer pid=5) Traceback (most recent call last):",
            ParsedLine(None, "APIServer", 5, "Traceback (most recent call last):"),
        ),
        (
            "Loading safetensors checkpoint shards:  50% Completed | 2/4 [00:01<00:01]",
            ParsedLine(
                None,
                None,
                None,
                "Loading safetensors checkpoint shards:  50% Completed | 2/4 [00:01<00:01]",
            ),
        ),
    ],
)
def test_it_splits_vllms_log_prefix_from_the_message(line: str, expected: ParsedLine) -> None:
    assert parse(line) == expected
