"""Every Prometheus metric of tastemaker, named in one place.

The worker serves them on ``TASTEMAKER_METRICS_PORT`` (``/metrics``); the trainer will too. A
metric is defined here once and imported where it is updated, so a name or label set cannot drift
between modules (prometheus-client refuses a second registration of the same name anyway).

Consumer lag is *processing* lag: the Kafka end offset of a partition minus the next offset the
workers committed to Redis for it (the ``offsets`` hash, written in the batch transaction). Kafka's
own consumer-group offsets would read lower: Faust acknowledges a batch before its
recommendations are written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from prometheus_client import Counter, Gauge, Histogram

# --- stream worker ------------------------------------------------------------------------------
EVENTS = Counter("tastemaker_events_total", "Events processed", ["topic"])
REJECTS = Counter("tastemaker_rejected_events_total", "Events sent to the DLQ", ["reason"])
DUPLICATES = Counter("tastemaker_duplicate_events_total", "Events dropped as duplicates")
BATCH_SECONDS = Histogram("tastemaker_batch_seconds", "Time to process one batch")
# up to 10 minutes: behind a backlog (a replay, a restart) freshness is the queueing time
FRESHNESS = Histogram("tastemaker_freshness_seconds",
                      "Kafka append time to recommendations written",
                      buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
                               300, 600))
REDIS_WRITE_SECONDS = Histogram(
    "tastemaker_redis_write_seconds",
    "Round trip of one Redis write transaction: op=commit (histories + deltas + offsets, "
    "MULTI/EXEC under WATCH) or op=recommendations (recs + explanations of a batch's users)",
    ["op"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
CONSUMER_LAG = Gauge(
    "tastemaker_consumer_lag",
    "Messages not yet processed: Kafka end offset minus the next offset committed to Redis, "
    "per source partition owned by this worker",
    ["topic", "partition"])
RANKER_VERSION = Gauge("tastemaker_ranker_version",
                       "Version of the published ranker this process serves with (0: none)")
RANKER_EXAMPLES = Counter("tastemaker_ranker_examples_total",
                          "Ranker training examples logged to the examples topic")

# --- trainer --------------------------------------------------------------------------------------
TRAINER_LOSS = Gauge("tastemaker_trainer_loss", "Ranker loss of the last training run",
                     ["split"])  # split = train | holdout
TRAINER_GUARD = Counter("tastemaker_trainer_guard_total",
                        "Trained rankers by the publication guard's decision",
                        ["decision"])  # published | refused | too_large (over the artefact limit)
TRAINER_EXAMPLES = Counter("tastemaker_trainer_examples_total",
                           "Training examples the trainer read", ["outcome"])  # read | rejected
TRAINER_PUBLISHED = Gauge("tastemaker_trainer_published_version",
                          "Ranker version the trainer last published or rolled back to")


def record_lag(end_offsets: Mapping[tuple[str, int], int],
               next_offsets: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """Set `CONSUMER_LAG` for the partitions in ``end_offsets`` (those this worker owns) and drop
    the series of partitions it no longer owns, so that summing over workers counts each
    partition once. A partition without a committed offset lags by its whole log. Returns the
    lag per partition.

    >>> record_lag({("plays", 0): 10, ("plays", 1): 4}, {("plays", 0): 7})
    {('plays', 0): 3, ('plays', 1): 4}
    >>> record_lag({("plays", 1): 4}, {("plays", 1): 4})  # plays:0 moved to another worker
    {('plays', 1): 0}
    """
    lag = {tp: max(0, end - next_offsets.get(tp, 0)) for tp, end in end_offsets.items()}
    owned = {(topic, str(partition)) for topic, partition in lag}
    for metric in CONSUMER_LAG.collect():
        for sample in metric.samples:
            key = (sample.labels["topic"], sample.labels["partition"])
            if key not in owned:
                CONSUMER_LAG.remove(*key)
    for (topic, partition), value in lag.items():
        CONSUMER_LAG.labels(topic, str(partition)).set(value)
    return lag


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """The ``q`` quantile of a Prometheus histogram as the upper bound of the bucket it falls in:
    ``buckets`` are (``le``, cumulative count) pairs, +Inf last. An upper bound, not an estimate:
    the true quantile lies in that bucket. ``inf`` when it is beyond the largest finite bound,
    NaN when the histogram is empty.

    >>> buckets = [(0.1, 50), (1.0, 98), (10.0, 100), (math.inf, 100)]
    >>> histogram_quantile(buckets, 0.5), histogram_quantile(buckets, 0.99)
    (0.1, 10.0)
    >>> histogram_quantile([(1.0, 0), (math.inf, 2)], 0.5)
    inf
    """
    ordered = sorted(buckets)
    total = ordered[-1][1] if ordered else 0
    if total <= 0:
        return math.nan
    for le, count in ordered:
        if count >= q * total:
            return le
    return math.inf
