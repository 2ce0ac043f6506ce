"""ReviewSentiments in the worker: scoring a batch equals scoring its reviews one by one."""

from __future__ import annotations

import random

from models.sentiment import ReviewSentiment
from streams.events import Review
from streams.keys import Keys
from streams.sentiment import PartitionModel, ReviewSentiments
from streams.settings import load_settings
from tests.unit.test_sentiment import HOSTILE
from tests.unit.test_summary import review


def sentiments() -> ReviewSentiments:
    settings = load_settings()
    out = ReviewSentiments(settings, Keys(settings.key_prefix))
    out.models[0] = PartitionModel(ReviewSentiment(), 0)
    return out


def test_score_many_equals_score_in_order() -> None:
    rng = random.Random(5)
    texts = [review(n % 3 > 0, rng) for n in range(60)] + [
        t[:10_000] for name, t in HOSTILE.items()
        if t.strip() and name != "lone_surrogate"]  # what the event contract lets through
    reviews = [(100 + n, Review(user_id=f"u{n % 7}", item_id="i1", ts=1.7e9, text=text,
                                rating=None if n % 4 == 3 else (5 if n % 3 else 1)))
               for n, text in enumerate(texts)]
    one, many = sentiments(), sentiments()
    expected = [one.score(0, offset, r) for offset, r in reviews]
    got = many.score_many(0, reviews[:7]) + many.score_many(0, []) + many.score_many(
        0, reviews[7:])
    assert got == expected
    assert many.models[0].next_offset == one.models[0].next_offset == reviews[-1][0] + 1
    assert many.models[0].model.to_bytes() == one.models[0].model.to_bytes()
    assert len({p for p, _ in expected}) > 10  # the model learned: scores are not all 0.5
