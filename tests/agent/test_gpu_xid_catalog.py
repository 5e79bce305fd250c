"""XID lookups: NVIDIA's catalog entries, our severities and actions, and unknown XIDs."""

from __future__ import annotations

import pytest

from agent.xid_catalog import BUCKET_ACTION, BUCKET_SEVERITY, CATALOG, SEVERITIES, lookup

# The XIDs of reference §6 and the other common ones the agent must know.
REQUIRED = (8, 13, 31, 32, 38, 43, 45, 48, 56, 57, 61, 62, 63, 64, 68, 69, 74, 79, 92, 93, 94,
            95, 119, 120, 121, 122, 123, 140, 154)  # fmt: skip


def test_it_knows_every_common_xid() -> None:
    for xid in REQUIRED:
        info = lookup(xid)
        assert info.known and info.xid == xid, xid
        assert info.severity in SEVERITIES and info.action and info.description


def test_it_takes_the_catalogs_resolution_buckets() -> None:
    assert lookup(79).bucket == "RESTART_BM" and lookup(79).mnemonic.endswith("FALLEN_OFF_THE_BUS")
    assert lookup(48).bucket == "WORKFLOW_XID_48"
    assert lookup(95).bucket == "RESET_GPU" and lookup(94).bucket == "RESTART_APP"
    assert lookup(119).bucket == lookup(120).bucket == "RESET_GPU"
    assert lookup(154).bucket == "XID_154"


@pytest.mark.parametrize(
    ("xid", "severity", "words"),
    [
        (13, "warning", "restart vLLM"),
        (31, "warning", "illegal memory access"),
        (43, "info", "GPU remains healthy"),
        (48, "critical", "reset the GPU or reboot the node"),
        (63, "warning", "reset the GPU when convenient"),  # catalog: IGNORE; see the module
        (64, "critical", "RMA"),
        (74, "critical", "NVLink"),
        (79, "critical", "reboot the node"),
        (94, "warning", "restart vLLM"),
        (95, "critical", "reset the GPU before restarting vLLM"),
        (119, "critical", "reset the GPU"),
        (154, "warning", "nvidia-smi -q"),
    ],
)
def test_it_says_how_bad_an_xid_is_and_what_to_do(xid: int, severity: str, words: str) -> None:
    info = lookup(xid)
    assert info.severity == severity
    assert words in info.action


def test_it_gives_an_unknown_xid_a_cautious_default() -> None:
    for xid in (0, 4242, -1):
        info = lookup(xid)
        assert not info.known and info.severity == "warning" and info.bucket == "UNKNOWN"
        assert "dmesg | grep Xid" in info.action
    assert lookup(999).description == "NVML reported an XID it could not identify"


def test_it_maps_every_bucket_it_uses_to_a_severity_and_an_action() -> None:
    for info in CATALOG.values():
        assert info.bucket in BUCKET_SEVERITY and info.bucket in BUCKET_ACTION, info.xid
