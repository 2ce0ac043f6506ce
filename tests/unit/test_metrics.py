"""streams.runtime.metrics: every metric named once; lag is end offset minus committed next
offset."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest

from streams.runtime import metrics
from streams.runtime.metrics import CONSUMER_LAG, record_lag


def _lag_series() -> dict[tuple[str, str], float]:
    return {(s.labels["topic"], s.labels["partition"]): s.value
            for family in CONSUMER_LAG.collect() for s in family.samples}


def test_lag_per_owned_partition_and_released_partitions_dropped():
    lag = record_lag({("plays", 0): 120, ("plays", 1): 50, ("ratings", 0): 9},
                     {("plays", 0): 100, ("plays", 1): 50})
    assert lag == {("plays", 0): 20, ("plays", 1): 0, ("ratings", 0): 9}
    assert _lag_series() == {("plays", "0"): 20, ("plays", "1"): 0, ("ratings", "0"): 9}
    record_lag({("plays", 1): 60}, {("plays", 1): 55})  # the others moved to another worker
    assert _lag_series() == {("plays", "1"): 5}
    record_lag({}, {})
    assert _lag_series() == {}


def test_a_committed_offset_past_the_end_reads_zero_not_negative():
    assert record_lag({("plays", 0): 10}, {("plays", 0): 12}) == {("plays", 0): 0}
    record_lag({}, {})


def test_the_metrics_the_trainer_and_ranker_use_are_exposed():
    text = generate_latest(REGISTRY).decode()
    for name in ("tastemaker_ranker_version", "tastemaker_trainer_loss",
                 "tastemaker_trainer_guard_total", "tastemaker_trainer_examples_total",
                 "tastemaker_redis_write_seconds", "tastemaker_consumer_lag"):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    metrics.TRAINER_LOSS.labels("holdout").set(0.25)
    metrics.TRAINER_GUARD.labels("refused").inc()
    text = generate_latest(REGISTRY).decode()
    assert 'tastemaker_trainer_loss{split="holdout"} 0.25' in text
    assert 'tastemaker_trainer_guard_total{decision="refused"} 1.0' in text
