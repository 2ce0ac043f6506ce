"""The demo's pure parts: reading the trainer's log stream and percentiles from histogram
buckets."""

from __future__ import annotations

import math

import pytest

from streams.runtime.metrics import histogram_quantile
from streams.tools.demo import TrainerLog


def attempt(read: int, *, fitting: bool) -> dict[bytes, bytes]:
    """A fit attempt's entry, as `streams.runtime.trainer.Trainer` adds it to the trainer log
    stream."""
    return {b"kind": b"attempt", b"fitting": b"1" if fitting else b"0", b"read": b"%d" % read}


def decision(published: bool, candidate: float, current: float, against: str, groups: int
             ) -> dict[bytes, bytes]:
    return {b"kind": b"decision", b"published": b"1" if published else b"0",
            b"candidate_ndcg": repr(candidate).encode(), b"current_ndcg": repr(current).encode(),
            b"against": against.encode(), b"holdout_groups": b"%d" % groups}


ENTRIES = [
    attempt(12, fitting=False),  # too few examples
    attempt(280, fitting=True),
    decision(True, 0.1126, 0.1124, "co-occurrence order", 55),
    attempt(910, fitting=True),
    decision(False, 0.1001, 0.1050, "version 1", 180),
]


def test_trainer_log_counts_fits_and_decisions():
    log = TrainerLog.of(ENTRIES)
    assert log.attempts == (12, 280, 910)
    assert log.fits_started == 2 and not log.in_flight
    assert (log.published, log.refused) == (1, 1)
    first, second = log.decisions
    assert (first.candidate_ndcg, first.current_ndcg, first.against, first.holdout_groups) == (
        0.1126, 0.1124, "co-occurrence order", 55)
    assert second.against == "version 1" and not second.published


@pytest.mark.parametrize(("logged", "caught_up"), [(910, True), (900, True), (911, False)])
def test_caught_up_once_the_last_fit_read_everything_logged(logged: int, caught_up: bool):
    assert TrainerLog.of(ENTRIES).caught_up(logged) is caught_up


def test_not_caught_up_while_a_fit_is_in_flight():
    log = TrainerLog.of([*ENTRIES, attempt(960, fitting=True)])
    assert log.in_flight and not log.caught_up(960)


def test_too_few_examples_is_caught_up_when_everything_was_read():
    log = TrainerLog.of([attempt(5, fitting=False)])
    assert log.caught_up(5) and not log.caught_up(6)
    assert TrainerLog.of([]).caught_up(0)  # nothing logged: no fit will come
    assert not TrainerLog.of([]).caught_up(1)


def test_histogram_quantile_is_the_upper_bound_of_the_bucket():
    buckets = [(0.5, 10), (1.0, 60), (5.0, 99), (10.0, 100), (math.inf, 100)]
    assert histogram_quantile(buckets, 0.5) == 1.0  # 50 observations at or below 1 s
    assert histogram_quantile(buckets, 0.1) == 0.5
    assert histogram_quantile(buckets, 0.99) == 5.0
    assert histogram_quantile(buckets, 1.0) == 10.0
    assert histogram_quantile(list(reversed(buckets)), 0.5) == 1.0  # order does not matter
    assert histogram_quantile([(1.0, 1), (math.inf, 4)], 0.5) == math.inf  # past the last bound
    assert math.isnan(histogram_quantile([(1.0, 0), (math.inf, 0)], 0.5))
