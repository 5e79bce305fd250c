"""The loop shown to work on the simulated fleet (simulator/drill.py; `make bench-loop` runs it
longer and prints the figures): the learner takes over from the operator where the operator
agrees, never runs what the operator vetoes, and stays within the safety limits."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from simulator import drill

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_learner_takes_over_what_the_operator_approves_and_nothing_it_vetoes() -> None:
    # A lower bar than the default 0.9 so that half an hour of incidents is enough to see it.
    with override_settings(AUTO_THRESHOLD=0.7):
        report = drill.drill(hosts=6, duration_s=2400.0)
    first, _, third, last = report.auto_share_by_quarter
    assert report.proposals >= 15, report.lines()
    assert report.asked_before_first_auto >= 5, report.lines()  # it starts by asking
    assert report.auto > 0 and (third + last) / 2 > first, report.lines()  # then it acts
    assert report.agreement >= 0.95, report.lines()
    assert report.vetoed_then_auto == 0, report.lines()
    assert report.outcomes["success"] > report.outcomes["failure"], report.lines()
    # The learning drill's own budget (simulator/drill.py LEARNING_DRILL_SETTINGS)
    assert report.max_auto_capacity_out <= drill.LEARNING_DRILL_SETTINGS["CAPACITY_BUDGET"] + 1e-9


def test_a_fault_on_every_host_at_once_stays_within_the_capacity_budget() -> None:
    report = drill.all_hosts_at_once(hosts=8, duration_s=600.0)
    assert report.auto >= 1
    assert report.max_auto_capacity_out <= settings.CAPACITY_BUDGET + 1e-9
    assert report.held_back["hosts_per_model"] + report.held_back["blast_radius"] >= 1


def test_a_host_that_keeps_failing_ends_with_its_breaker_open_and_an_operator_asked() -> None:
    report = drill.keeps_failing(duration_s=2700.0)
    assert 1 <= report.auto <= settings.HOST_BREAKER_MITIGATIONS + 1
    assert report.breaker_asks >= 1
