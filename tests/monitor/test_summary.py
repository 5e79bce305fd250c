"""What the fleet row and the host page show of a checkpoint's GPU memory."""

from __future__ import annotations

from agent.checkpoint import from_dict, to_dict
from monitor.summary import row_figures, summarize
from tests.factories import GIB, make_checkpoint, with_gpus


def test_a_host_of_several_gpus_shows_all_their_memory_and_the_fullest_ones_share() -> None:
    # One GPU of four is at 99 %: the four together are 84 % used.
    cp = from_dict(with_gpus(to_dict(make_checkpoint()), [79.2 * GIB] + [72 * GIB] * 3))
    figures = summarize(cp)
    assert figures["gpu_mem_used_pct"] == 99.0 and figures["gpu_count"] == 4
    assert row_figures(figures)["gpu_mem"] == "295.2 / 320 GB (fullest GPU 99%)"


def test_a_host_of_one_gpu_shows_its_share() -> None:
    figures = summarize(make_checkpoint(gpu_memory_used_bytes=74 * GIB))
    assert row_figures(figures)["gpu_mem"] == "74.0 / 80 GB (92%)"
