"""The demo's pure parts: reading the trainer's log and percentiles from histogram buckets."""

from __future__ import annotations

import math

import pytest

from streams.demo import TrainerLog
from streams.metrics import histogram_quantile

# lines as the trainer writes them (streams.trainer.Trainer.fit), with other loggers around
LOG = """\
21:09:10 INFO aiokafka.consumer.subscription_state: Updating subscribed topics to: frozenset()
21:09:12 INFO streams.trainer: only 12 examples (12 read): not fitting yet
21:09:20 INFO streams.trainer: fitting on 274 examples (280 read)
21:09:24 INFO streams.trainer: guard published: held-out nDCG@10 0.1126 (fine-tuned) vs 0.1124 \
(co-occurrence order) on 55 groups; fit 219 groups x 20 epochs on cpu in 0.44 s
21:09:50 INFO streams.trainer: fine-tuning from ranker version 1
21:09:50 INFO streams.trainer: fitting on 900 examples (910 read)
21:09:55 INFO streams.trainer: guard refused: held-out nDCG@10 0.1001 (fine-tuned) vs 0.1050 \
(version 1) on 180 groups; fit 720 groups x 20 epochs on cpu in 1.20 s
"""


def test_trainer_log_counts_fits_and_decisions():
    log = TrainerLog.parse(LOG)
    assert log.attempts == (12, 280, 910)
    assert log.fits_started == 2 and not log.in_flight
    assert (log.published, log.refused) == (1, 1)
    first, second = log.decisions
    assert (first.candidate_ndcg, first.current_ndcg, first.against, first.holdout_groups) == (
        0.1126, 0.1124, "co-occurrence order", 55)
    assert second.against == "version 1" and not second.published


@pytest.mark.parametrize(("logged", "caught_up"), [(910, True), (900, True), (911, False)])
def test_caught_up_once_the_last_fit_read_everything_logged(logged: int, caught_up: bool):
    assert TrainerLog.parse(LOG).caught_up(logged) is caught_up


def test_not_caught_up_while_a_fit_is_in_flight():
    log = TrainerLog.parse(LOG + "21:10:30 INFO streams.trainer: fitting on 950 examples "
                                 "(960 read)\n")
    assert log.in_flight and not log.caught_up(960)


def test_too_few_examples_is_caught_up_when_everything_was_read():
    log = TrainerLog.parse("x only 5 examples (5 read): not fitting yet\n")
    assert log.caught_up(5) and not log.caught_up(6)
    assert TrainerLog.parse("").caught_up(0)  # nothing logged: no fit will come
    assert not TrainerLog.parse("").caught_up(1)


def test_histogram_quantile_is_the_upper_bound_of_the_bucket():
    buckets = [(0.5, 10), (1.0, 60), (5.0, 99), (10.0, 100), (math.inf, 100)]
    assert histogram_quantile(buckets, 0.5) == 1.0  # 50 observations at or below 1 s
    assert histogram_quantile(buckets, 0.1) == 0.5
    assert histogram_quantile(buckets, 0.99) == 5.0
    assert histogram_quantile(buckets, 1.0) == 10.0
    assert histogram_quantile(list(reversed(buckets)), 0.5) == 1.0  # order does not matter
    assert histogram_quantile([(1.0, 1), (math.inf, 4)], 0.5) == math.inf  # past the last bound
    assert math.isnan(histogram_quantile([(1.0, 0), (math.inf, 0)], 0.5))
