"""MovieLens replay events (pure), over the real data set, and the validation step the producer
applies to every event before sending it."""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter
from typing import Any

import pytest

from streams.client.produce import EventSender, numbered_lines, topic_kind, topic_of_kind, validate
from streams.contract.events import RejectedEvent, decode_event, encode_event, parse_event
from streams.settings import load_settings
from streams.tools.datasets import LabelledReview, Movie, Rating, labelled_reviews, movielens_100k
from streams.tools.replay import completion_of, item_metadata, movielens_events

Events = list[tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def data() -> tuple[list[Rating], list[LabelledReview], dict[str, Movie]]:
    cache_dir = load_settings().cache_dir
    ratings, movies = movielens_100k(cache_dir)
    return ratings, labelled_reviews(cache_dir), movies


@pytest.fixture(scope="module")
def events(data: tuple[list[Rating], list[LabelledReview], dict[str, Movie]]) -> Events:
    ratings, reviews, _ = data
    return list(movielens_events(ratings, reviews))


def test_one_play_and_one_rating_per_rating(events: Events) -> None:
    kinds = Counter(kind for kind, _ in events)
    assert kinds["play"] == kinds["rating"] == 100_000


def test_deterministic_by_seed(data: Any, events: Events) -> None:
    ratings, reviews, _ = data
    assert list(movielens_events(ratings, reviews, seed=7)) == events
    other = list(movielens_events(ratings, reviews, seed=8))
    assert other != events
    assert [e for e in other if e[0] != "review"] == [e for e in events if e[0] != "review"]


def test_input_order_does_not_matter(data: Any) -> None:
    ratings, reviews, _ = data
    head = ratings[:3000]
    shuffled = head[:]
    random.Random(1).shuffle(shuffled)
    assert list(movielens_events(shuffled, reviews)) == list(movielens_events(head, reviews))


def test_time_ordered_with_each_ratings_events_together(events: Events) -> None:
    stamps = [e["ts"] for _, e in events]
    assert stamps == sorted(stamps)
    for i, (kind, event) in enumerate(events):
        if kind == "rating":
            play_kind, play = events[i - 1]
            assert play_kind == "play"
            assert (play["user_id"], play["item_id"]) == (event["user_id"], event["item_id"])
        if kind == "review":
            assert events[i - 1][0] == "rating"
            assert events[i - 1][1]["item_id"] == event["item_id"]


def test_review_polarity_matches_rating(data: Any, events: Events) -> None:
    _, reviews, _ = data
    positive = {r.text for r in reviews if r.positive}
    negative = {r.text for r in reviews if not r.positive}
    ratings = {(e["user_id"], e["item_id"]): e["rating"] for k, e in events if k == "rating"}
    neutral_positive = neutral = 0
    for kind, event in events:
        if kind != "review":
            continue
        stars = ratings[event["user_id"], event["item_id"]]
        if stars >= 4:
            assert event["text"] in positive
        elif stars <= 2:
            assert event["text"] in negative
        else:
            neutral += 1
            neutral_positive += event["text"] in positive
        if "rating" in event:
            assert event["rating"] == stars
    assert 0.45 < neutral_positive / neutral < 0.55


def test_shares_close_to_configured(events: Events) -> None:
    reviews = [e for k, e in events if k == "review"]
    assert abs(len(reviews) / 100_000 - 0.2) < 0.01
    rated = sum("rating" in e for e in reviews)
    assert abs(rated / len(reviews) - 0.5) < 0.02


@pytest.mark.parametrize(("share", "rated"), [(0.0, 0.5), (1.0, 0.0), (0.05, 1.0)])
def test_other_shares(data: Any, share: float, rated: float) -> None:
    ratings, reviews, _ = data
    out = list(movielens_events(ratings[:5000], reviews, review_share=share,
                                rated_review_share=rated, seed=3))
    got = [e for k, e in out if k == "review"]
    assert abs(len(got) / 5000 - share) < 0.02
    if got:
        assert abs(sum("rating" in e for e in got) / len(got) - rated) < 0.05


def test_texts_not_reused_before_a_pool_runs_out(events: Events) -> None:
    texts = [e["text"] for k, e in events if k == "review"]
    assert len(set(texts)) == len(texts)  # 20k reviews from pools of ~16.7k each


def test_every_event_validates_and_round_trips(events: Events) -> None:
    for kind, obj in events:
        event = parse_event(kind, obj)  # raises on anything invalid
        assert decode_event(kind, encode_event(event)) == event


def test_event_ids_unique_and_named(events: Events) -> None:
    ids = [e["event_id"] for _, e in events]
    assert len(set(ids)) == len(ids)
    kind, first = events[0]
    assert first["event_id"] == f"ml-{first['user_id']}-{first['item_id']}-{kind}"


def test_completion_follows_stars() -> None:
    assert [completion_of(s) for s in (1, 2, 3, 4, 5)] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert completion_of(0.5) == 0.1


@pytest.mark.parametrize("bad", [{"review_share": -0.1}, {"review_share": 1.5},
                                 {"rated_review_share": 2.0}])
def test_shares_out_of_range(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        list(movielens_events([], [], **bad))


def test_reviews_need_both_polarities() -> None:
    only_positive = [LabelledReview("great", True, "x")]
    with pytest.raises(ValueError, match="negative"):
        list(movielens_events([Rating("1", "2", 1.0, 0.0)], only_positive))
    assert len(list(movielens_events([Rating("1", "2", 1.0, 0.0)], only_positive,
                                     review_share=0.0))) == 2


def test_overlong_review_texts_left_out() -> None:
    reviews = [LabelledReview("x" * 10_001, True, "x"), LabelledReview("fine", True, "x"),
               LabelledReview("bad", False, "x")]
    out = list(movielens_events([Rating("1", "2", 5.0, 0.0)], reviews, review_share=1.0))
    assert out[-1][1]["text"] == "fine"


def test_item_metadata(data: Any) -> None:
    _, _, movies = data
    assert item_metadata(movies["1"]) == {"title": "Toy Story", "year": "1995",
                                          "genres": "Animation Children's Comedy"}
    assert item_metadata(Movie("9", "Untitled", "", ())) == {"title": "Untitled"}


# --- the producer's validation step ---------------------------------------------------------------

def test_topic_kinds_follow_settings() -> None:
    settings = load_settings(topic_ratings="stars")
    assert topic_kind(settings, "stars") == "rating"
    assert topic_of_kind(settings, "rating") == "stars"
    with pytest.raises(ValueError, match="not an event topic"):
        topic_kind(settings, "ratings")
    with pytest.raises(ValueError, match="not an event topic"):
        topic_kind(settings, settings.topic_dlq)


def test_validate_accepts_bytes_dicts_and_events() -> None:
    obj = {"user_id": 1, "item_id": 2, "ts": 3, "rating": 4}
    from_dict = validate("rating", obj, max_bytes=1000)
    assert validate("rating", encode_event(from_dict), max_bytes=1000) == from_dict
    assert validate("rating", from_dict, max_bytes=1000) is from_dict
    with pytest.raises(RejectedEvent) as info:
        validate("play", from_dict, max_bytes=1000)
    assert info.value.code == "wrong_kind"
    with pytest.raises(RejectedEvent, match="rating"):
        validate("rating", {**obj, "rating": 6}, max_bytes=1000)


def test_numbered_lines_skip_blanks_and_keep_line_numbers() -> None:
    stream = io.BytesIO(b'{"a": 1}\n\n  \n\xff\r\n{"b": 2}')
    assert list(numbered_lines(stream)) == [("line 1", b'{"a": 1}'), ("line 4", b"\xff"),
                                            ("line 5", b'{"b": 2}')]


class _FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.messages: list[tuple[bytes, bytes]] = []

    def append(self, *, timestamp: None, key: bytes, value: bytes) -> object | None:
        if len(self.messages) >= self.capacity:
            return None
        self.messages.append((key, value))
        return object()


class _FakeProducer:
    """The batch half of AIOKafkaProducer's interface; batches hold ``capacity`` messages."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes]]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> _FakeBatch:
        return _FakeBatch(self.capacity)

    async def send_batch(self, batch: _FakeBatch, topic: str, *, partition: int
                         ) -> asyncio.Future[None]:
        self.sent.append((topic, partition, batch.messages))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def _rating(user: str, ts: int) -> Any:
    return parse_event("rating", {"user_id": user, "item_id": 2, "ts": ts, "rating": 4})


def test_sender_batches_per_partition_keyed_like_kafka() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    users = ["u:1", "a b", "7", "*", "u:1", "u:1", "7"]

    async def run() -> _FakeProducer:
        producer = _FakeProducer(capacity=2)
        sender = EventSender(producer, max_bytes=1000)  # type: ignore[arg-type]
        for ts, user in enumerate(users):
            await sender.send("ratings", _rating(user, ts))
        await sender.drain()
        return producer

    producer = asyncio.run(run())
    assert sum(len(messages) for _, _, messages in producer.sent) == len(users)
    assert all(len(messages) <= 2 for _, _, messages in producer.sent)
    for topic, partition, messages in producer.sent:
        assert topic == "ratings"
        for key, _ in messages:
            assert DefaultPartitioner()(key, [0, 1, 2], [0, 1, 2]) == partition
    mine = [decode_event("rating", value).ts for _, _, messages in producer.sent
            for key, value in messages if key == b"u:1"]
    assert mine == [0.0, 4.0, 5.0]  # a user's events keep their order


def test_sender_refuses_oversize() -> None:
    async def run() -> _FakeProducer:
        producer = _FakeProducer()
        sender = EventSender(producer, max_bytes=200)  # type: ignore[arg-type]
        with pytest.raises(RejectedEvent) as info:
            await sender.send("reviews", parse_event("review", {"user_id": 1, "item_id": 2,
                                                               "ts": 3, "text": "x" * 300}))
        assert info.value.code == "too_large"
        await sender.drain()
        return producer

    assert asyncio.run(run()).sent == []


def test_the_no_completion_encoding_drops_only_the_plays_completion(data: Any) -> None:
    ratings, reviews, _ = data
    with_completion = list(movielens_events(ratings[:2000], reviews))
    without = list(movielens_events(ratings[:2000], reviews, encoding="no-completion"))
    assert len(without) == len(with_completion)
    for (kind, plain), (same_kind, full) in zip(without, with_completion, strict=True):
        assert kind == same_kind
        if kind == "play":
            assert "completion" not in plain and "completion" in full
            assert parse_event("play", dict(plain)).completion is None
            full = {k: v for k, v in full.items() if k != "completion"}
        assert plain == full
    with pytest.raises(ValueError, match="encoding"):
        list(movielens_events(ratings[:1], reviews, encoding="stars"))  # type: ignore[arg-type]
