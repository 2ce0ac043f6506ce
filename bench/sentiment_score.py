"""Per-review cost of the worker's sentiment step:
`streams.runtime.sentiment.ReviewSentiments.score`.

What the worker runs for each review (issue 13): P(positive) with the partition's model, the
item-summary digest (`models.summary.digest_review`, which scores up to six sentences), then
learning the review when it has a rating. The texts are the 33,530 labelled reviews in a seeded
shuffle; a rating follows the label (5/4 positive, 1/2 negative) and every third review has none,
as in a stream where some reviews come without stars (texts over the event contract's
``MAX_TEXT_CHARS`` are cut there, as a producer must). One partition, one fresh model per pass,
one thread; the figures (wall and CPU clocks) are the best of ``--repeats`` passes (a shared
box's neighbours can slow one pass). With ``score_many`` (the worker's batch call) the same
reviews go in batches of ``--batch``.

``--save PATH`` writes every (p, digest) as JSON, ``--compare PATH`` checks them against a saved
run (probabilities to 1e-12 relative, digests equal): a faster version must give the same outputs.

    python -m bench.sentiment_score --limit 10000 --save /tmp/before.json
    python -m bench.sentiment_score --limit 10000 --compare /tmp/before.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

from streams.contract.events import MAX_TEXT_CHARS, Review
from streams.contract.keys import Keys
from streams.runtime.sentiment import PartitionModel, ReviewSentiments
from streams.settings import get_settings
from streams.tools.datasets import labelled_reviews


def reviews(limit: int, seed: int) -> list[Review]:
    stream = labelled_reviews(get_settings().cache_dir)
    random.Random(seed).shuffle(stream)
    out = []
    for i, r in enumerate(stream[:limit]):
        rating = None if i % 3 == 2 else (5 - i % 2 if r.positive else 1 + i % 2)
        out.append(Review(user_id=f"u{i % 997}", item_id=f"i{i % 211}", ts=1.7e9 + i,
                          text=r.text[:MAX_TEXT_CHARS], rating=rating))
    return out


def fresh(settings, keys) -> ReviewSentiments:
    from models.sentiment import ReviewSentiment

    sentiments = ReviewSentiments(settings, keys)
    sentiments.models[0] = PartitionModel(ReviewSentiment(), 0)
    return sentiments


def one_pass(stream: Sequence[Review], *, batch: int | None) -> tuple[float, float, list]:
    """Wall and CPU seconds of scoring ``stream`` with a fresh model, and the results."""
    settings = get_settings()
    sentiments = fresh(settings, Keys(settings.key_prefix))
    t0, cpu0 = time.perf_counter(), time.process_time()
    if batch is None:
        out = [sentiments.score(0, offset, review) for offset, review in enumerate(stream)]
    else:
        out = []
        indexed = list(enumerate(stream))
        for start in range(0, len(indexed), batch):
            out += sentiments.score_many(0, indexed[start:start + batch])
    return time.perf_counter() - t0, time.process_time() - cpu0, out


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="reviews per score_many call")
    parser.add_argument("--save", type=Path)
    parser.add_argument("--compare", type=Path)
    args = parser.parse_args(argv)
    stream = reviews(args.limit, args.seed)
    modes = {"score": None}
    if hasattr(ReviewSentiments, "score_many"):
        modes["score_many"] = args.batch
    report: dict = {"n_reviews": len(stream), "rated": sum(r.rating is not None for r in stream)}
    outputs = {}
    for name, batch in modes.items():
        passes = [one_pass(stream, batch=batch) for _ in range(args.repeats)]
        best, best_cpu = min(s for s, _, _ in passes), min(c for _, c, _ in passes)
        outputs[name] = passes[0][2]
        report[name] = {"us_per_review": round(best / len(stream) * 1e6, 1),
                        "us_per_review_cpu": round(best_cpu / len(stream) * 1e6, 1),
                        "reviews_per_s": round(len(stream) / best),
                        "reviews_per_s_cpu": round(len(stream) / best_cpu),
                        "passes_wall_s": [round(s, 3) for s, _, _ in passes]}
    rows = [[p, dataclasses.asdict(d)] for p, d in outputs["score"]]
    if "score_many" in outputs:
        report["score_many_equals_score"] = outputs["score_many"] == outputs["score"]
    if args.save:
        args.save.write_text(json.dumps(rows))
    if args.compare:
        saved = json.loads(args.compare.read_text())
        worst, digests_equal = 0.0, len(saved) == len(rows)
        for (p0, d0), (p1, d1) in zip(saved, rows, strict=False):
            worst = max(worst, abs(p1 - p0) / max(abs(p0), 1e-300))
            d1 = json.loads(json.dumps(d1))
            worst = max(worst, abs(d1["sentence_p"] - d0["sentence_p"])
                        / max(abs(d0["sentence_p"]), 1e-300))
            digests_equal &= {k: v for k, v in d0.items() if k not in ("p", "sentence_p")} == {
                k: v for k, v in d1.items() if k not in ("p", "sentence_p")}
        report["compare"] = {"max_relative_difference": worst, "digests_equal": digests_equal,
                             "within_1e-12": worst <= 1e-12 and not math.isnan(worst)}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
