"""`streams.client.recs.get_recommendations` against a real Redis: one round trip, and the same
result as reading the keys one by one (the two-trip read it replaced, kept here as the
reference)."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import redis

from streams.client.recs import (
    Because,
    Recommendation,
    _explanation,
    _sentiment,
    _summary,
    _text,
    get_recommendations,
)
from streams.connections import redis_sync
from streams.contract.keys import Keys
from streams.settings import Settings
from streams.tools.namespaces import drop_namespaces
from streams.tools.stack import run_coroutine
from tests.conftest import isolated_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def own(settings: Settings) -> Iterator[Settings]:
    """The session's Redis under a key prefix of this test's own (deleted afterwards)."""
    isolated = isolated_settings(settings)
    yield isolated
    run_coroutine(drop_namespaces([isolated]))


def read_key_by_key(client: redis.Redis, keys: Keys, user_id: str, n: int
                    ) -> list[Recommendation]:
    """The reference: recs and explanations, then every item's title, sentiment and summary
    and the explaining items' titles, each with its own command."""
    top = [(_text(item) or "", float(score))
           for item, score in client.zrevrange(keys.recs(user_id), 0, n - 1, withscores=True)]
    explain = {_text(item): raw for item, raw in client.hgetall(keys.explain(user_id)).items()}
    out = []
    for item, score in top:
        because, source = _explanation(explain.get(item))
        out.append(Recommendation(
            item_id=item, score=score, title=_text(client.hget(keys.item(item), "title")),
            because=tuple(Because(b, _text(client.hget(keys.item(b), "title")))
                          for b in because),
            source=source,
            sentiment=_sentiment(*client.hmget(keys.item_sentiment(item),
                                               ["count", "sum", "decayed_sum", "decayed_weight"])),
            summary=_summary(client.get(keys.summary(item)))))
    return out


def write_awkward_user(client: redis.Redis, keys: Keys, user: str) -> None:
    """Recommendations with every kind of gap and oddity a reader can meet."""
    scores = {"i1": 0.9, "i2": 0.8, "i3": 0.8, "i4": 0.5, "film é": 0.25, "i6": 1 / 3,
              "i7": 0.1, "i8": 1e-12}
    client.zadd(keys.recs(user), scores)
    client.hset(keys.explain(user), mapping={
        "i1": orjson.dumps({"because": ["b1", "i2", "b2"], "source": "items"}),
        "i2": orjson.dumps({"because": ["b1"], "source": "users"}),
        # i3: no explanation at all
        "i4": b"{not json",
        "film é": orjson.dumps({"because": ["b\u00e9\u00e8 \U0001f600"], "source": "items"}),
        "i6": orjson.dumps({"because": [], "source": "trending"}),
        "i7": orjson.dumps({"because": "b3", "source": None}),  # a string: its letters
        "i8": orjson.dumps({"because": [42, "b4", "i8"]}),  # a number; the item itself
    })
    titles = {"i1": "One", "i2": "[REC] Two", "film é": "Café", "b1": "Liked one",
              "b\u00e9\u00e8 \U0001f600": "Émoji", "b": "Letter b", "42": "Forty-two",
              "b4": "Four"}  # i3, i4, i6, i7, i8, b2, b3 have none
    for item, title in titles.items():
        client.hset(keys.item(item), mapping={"title": title, "year": "1999"})
    client.hset(keys.item_sentiment("i1"), mapping={
        "count": 4, "sum": 3.0, "decayed_sum": 1.5, "decayed_weight": 2.0})
    client.hset(keys.item_sentiment("i2"), mapping={"count": 2, "sum": 1.0})
    client.hset(keys.item_sentiment("i3"), mapping={"count": "x", "sum": 1.0})
    client.set(keys.summary("i1"), orjson.dumps({
        "count": 4, "sentences": [{"side": "+", "text": "Great.", "p": 0.9}],
        "phrases": ["great"], "disagree": False}))
    client.set(keys.summary("i2"), b"[1, 2")


class Trips:
    """Counts the requests a client sends (a pipeline or a script is one)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        send = redis.connection.AbstractConnection.send_packed_command

        def counting(conn, command, check_health=True):
            self.count += 1
            return send(conn, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command",
                            counting)


def test_one_round_trip_reads_what_the_keys_hold(own: Settings, monkeypatch):
    keys = Keys(own.key_prefix)
    client = redis_sync(own)
    try:
        write_awkward_user(client, keys, "u1")
        client.script_flush()  # the first read after a restart: the server lacks the script
        for n in (1, 2, 4, 6, 8, 100):
            assert get_recommendations("u1", n, settings=own, client=client) \
                == read_key_by_key(client, keys, "u1", n)
        recs = get_recommendations("u1", 8, settings=own, client=client)
        assert [r.item_id for r in recs] == ["i1", "i3", "i2", "i4", "i6", "film é", "i7", "i8"]
        assert recs[0].because == (Because("b1", "Liked one"), Because("i2", "[REC] Two"),
                                   Because("b2", None))
        assert recs[0].sentiment is not None and recs[0].sentiment.recent == 0.75
        assert recs[5].because == (Because("b\u00e9\u00e8 \U0001f600", "Émoji"),)
        assert recs[6].because == (Because("b", "Letter b"), Because("3", None))

        trips = Trips(monkeypatch)
        for n in (1, 6):  # well-formed (or unreadable) explanations: one request
            trips.count = 0
            get_recommendations("u1", n, settings=own, client=client)
            assert trips.count == 1, n
        for n in (7, 100):  # "because": "b3" and [42, ...]: ids the script does not read
            trips.count = 0
            get_recommendations("u1", n, settings=own, client=client)
            assert trips.count == 2, n  # ... are read in a second trip
        trips.count = 0
        assert get_recommendations("nobody", 10, settings=own, client=client) == []
        assert trips.count == 1
    finally:
        client.close()


def test_one_round_trip_on_worker_written_lists(own: Settings, monkeypatch):
    """Lists as the worker writes them (explanations of up to three liked items)."""
    keys = Keys(own.key_prefix)
    client = redis_sync(own)
    try:
        for u in range(5):
            user = f"u{u}"
            items = {f"m{u * 7 + k}": 1.0 / (k + 1) for k in range(30)}
            client.zadd(keys.recs(user), items)
            client.hset(keys.explain(user), mapping={
                item: orjson.dumps({"because": [f"m{(k * 13) % 50}", f"h{k % 4}"],
                                    "source": "items"})
                for k, item in enumerate(items)})
        for k in range(60):
            client.hset(keys.item(f"m{k}"), "title", f"Movie {k}")
        client.hset(keys.item("h1"), "title", "Liked")
        trips = Trips(monkeypatch)
        for u in range(5):
            trips.count = 0
            recs = get_recommendations(f"u{u}", 20, settings=own, client=client)
            assert trips.count == 1
            assert len(recs) == 20
            assert recs == read_key_by_key(client, keys, f"u{u}", 20)
    finally:
        client.close()


def test_a_reader_needs_only_the_reader_commands_on_its_prefix(own: Settings):
    from streams.client.recs import READER_REDIS_COMMANDS
    from streams.connections import acl_rules, known_commands
    from streams.settings import load_settings

    keys = Keys(own.key_prefix)
    admin = redis_sync(own)
    username = f"tastemaker-reader-{own.key_prefix.strip(':')}"
    try:
        write_awkward_user(admin, keys, "u1")
        admin.script_flush()  # the EVAL fallback runs too
        admin.execute_command("ACL", "SETUSER", username, "reset", "on", ">reader-pw",
                              *acl_rules(own.key_prefix,
                                         known_commands(admin, READER_REDIS_COMMANDS)))
        reader = load_settings(**{**own.model_dump(), "redis_username": username,
                                  "redis_password": "reader-pw"})
        assert get_recommendations("u1", 100, settings=reader) \
            == read_key_by_key(admin, keys, "u1", 100)
        assert not [e for e in admin.acl_log(count=1000)
                    if (e.get("username") or b"") in (username, username.encode())]
    finally:
        admin.execute_command("ACL", "DELUSER", username)
        admin.close()
