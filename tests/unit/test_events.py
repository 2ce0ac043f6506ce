"""The event contract, property-based: valid events round-trip, invalid ones are rejected with a
reason that names the field (or ``value`` for whole-message problems) and a machine code."""

from __future__ import annotations

import json
import math
import random
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streams.contract.events import (
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    SCHEMA_BY_KIND,
    Event,
    Play,
    Rating,
    RejectedEvent,
    Review,
    check_event_key,
    decode_event,
    decode_events,
    encode_event,
    latest_event_ts,
    parse_event,
)
from streams.contract.keys import Keys
from streams.settings import SettingsError, load_settings
from streams.tools.datasets import labelled_reviews, movielens_100k
from streams.tools.replay import movielens_events
from tests.hostile import assert_same_outcome, reference_decode, reference_parse

MAX_TS = 32503680000
KINDS = ("play", "rating", "review")
REQUIRED = {
    "play": ("user_id", "item_id", "ts"),
    "rating": ("user_id", "item_id", "ts", "rating"),
    "review": ("user_id", "item_id", "ts", "text"),
}
NUMERIC = {"ts", "rating", "duration_s", "completion"}
STRINGS = {"user_id", "item_id", "event_id", "text"}

# --- strategies over the schemas ------------------------------------------------------------------

int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what JSON encoders write
ids = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(min_size=1, max_size=MAX_ID_CHARS),
)
timestamps = st.one_of(
    st.integers(min_value=0, max_value=MAX_TS),
    st.floats(min_value=0, max_value=MAX_TS, allow_nan=False),
)
stars = st.one_of(st.integers(min_value=1, max_value=5),
                  st.floats(min_value=0.5, max_value=5, allow_nan=False))
texts = st.text(min_size=1, max_size=300)


def _base() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"user_id": ids, "item_id": ids, "ts": timestamps},
        optional={"event_id": st.text(min_size=1, max_size=MAX_ID_CHARS),
                  "unknown_extra": int64s},
    )


def _with(extra: dict[str, st.SearchStrategy[Any]],
          optional: dict[str, st.SearchStrategy[Any]] | None = None
          ) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(_base(), st.fixed_dictionaries(extra, optional=optional or {})).map(
        lambda parts: {**parts[0], **parts[1]})


VALID: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "play": _with({}, {"duration_s": st.floats(min_value=0, max_value=1e9, allow_nan=False),
                       "completion": st.floats(min_value=0, max_value=1)}),
    "rating": _with({"rating": stars}),
    "review": _with({"text": texts}, {"rating": stars}),
}
valid_events = st.sampled_from(KINDS).flatmap(
    lambda kind: st.tuples(st.just(kind), VALID[kind]))


def _rejected(kind: str, raw: bytes, **kwargs: Any) -> RejectedEvent:
    with pytest.raises(RejectedEvent) as info:
        decode_event(kind, raw, **kwargs)
    return info.value


def _dumps(obj: object) -> bytes:
    return orjson.dumps(obj)


# --- valid events ---------------------------------------------------------------------------------

@given(valid_events)
def test_valid_events_round_trip(kind_and_obj: tuple[str, dict[str, Any]]) -> None:
    kind, obj = kind_and_obj
    event = decode_event(kind, _dumps(obj))
    assert isinstance(event, SCHEMA_BY_KIND[kind])
    assert decode_event(kind, encode_event(event)) == event
    assert event.user_id == str(obj["user_id"]) and event.item_id == str(obj["item_id"])
    assert "unknown_extra" not in orjson.loads(encode_event(event))


@given(valid_events)
def test_plural_topic_names_decode_the_same(kind_and_obj: tuple[str, dict[str, Any]]) -> None:
    kind, obj = kind_and_obj
    raw = _dumps(obj)
    assert decode_event(kind + "s", raw) == decode_event(kind, raw)


@given(valid_events)
def test_dedup_id_is_stable(kind_and_obj: tuple[str, dict[str, Any]]) -> None:
    kind, obj = kind_and_obj
    event = decode_event(kind, _dumps(obj))
    again = decode_event(kind, encode_event(event))
    assert event.dedup_id() == again.dedup_id()
    if "event_id" in obj:
        assert event.dedup_id() == obj["event_id"]


def test_longest_text_is_valid() -> None:
    raw = _dumps({"user_id": 1, "item_id": 2, "ts": 3, "text": "x" * MAX_TEXT_CHARS})
    assert len(decode_event("review", raw).text) == MAX_TEXT_CHARS


METACHARACTER_IDS = ["*", "user:1", "a b", "line\nbreak", "{tag}", "?[]", "\\", "\x00", " "]


@pytest.mark.parametrize("odd_id", METACHARACTER_IDS)
def test_redis_metacharacters_are_valid_ids(odd_id: str) -> None:
    raw = _dumps({"user_id": odd_id, "item_id": odd_id, "ts": 1, "rating": 4})
    event = decode_event("rating", raw)
    assert (event.user_id, event.item_id) == (odd_id, odd_id)
    assert decode_event("rating", encode_event(event)) == event


KEY_FAMILIES = ("recs", "explain", "recs_meta", "neighbours", "item", "item_sentiment", "history")


@given(a=st.text(min_size=1, max_size=20), b=st.text(min_size=1, max_size=20),
       prefix=st.sampled_from(["", "demo:", "t*"]))
def test_key_layout_copes_with_any_id(a: str, b: str, prefix: str) -> None:
    """Any two (family, id) pairs map to different keys: ids with ``:`` or ``*`` cannot collide."""
    keys = Keys(prefix)
    built = {(family, ident): getattr(keys, family)(ident)
             for family in KEY_FAMILIES for ident in (a, b)}
    assert len(set(built.values())) == len(built)


# --- invalid events -------------------------------------------------------------------------------

def _assert_names(exc: RejectedEvent, field: str, code: str) -> None:
    assert exc.code == code, exc
    assert field in exc.reason, exc.reason


@given(valid_events, st.data())
def test_missing_required_field(kind_and_obj: tuple[str, dict[str, Any]], data: st.DataObject
                                ) -> None:
    kind, obj = kind_and_obj
    field = data.draw(st.sampled_from(REQUIRED[kind]))
    del obj[field]
    exc = _rejected(kind, _dumps(obj))
    _assert_names(exc, field, "invalid")
    assert "Field required" in exc.reason


WRONG_FOR_NUMBER = st.one_of(st.booleans(), st.text(max_size=5), st.just("4"),
                             st.lists(int64s, max_size=2),
                             st.dictionaries(st.text(max_size=3), int64s, max_size=2))
WRONG_FOR_STRING = st.one_of(st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
                             st.lists(st.text(max_size=3), max_size=2),
                             st.dictionaries(st.text(max_size=3), int64s, max_size=2))


@given(valid_events, st.data())
def test_wrong_types(kind_and_obj: tuple[str, dict[str, Any]], data: st.DataObject) -> None:
    kind, obj = kind_and_obj
    fields = [f for f in SCHEMA_BY_KIND[kind].model_fields if f in NUMERIC | STRINGS]
    field = data.draw(st.sampled_from(fields))
    if field in NUMERIC:
        obj[field] = data.draw(WRONG_FOR_NUMBER)
    else:
        obj[field] = data.draw(WRONG_FOR_STRING if field in {"user_id", "item_id"}
                               else st.one_of(WRONG_FOR_STRING, int64s))
    _assert_names(_rejected(kind, _dumps(obj)), field, "invalid")


def test_null_required_field() -> None:
    exc = _rejected("rating", _dumps({"user_id": None, "item_id": 1, "ts": 1, "rating": 3}))
    _assert_names(exc, "user_id", "invalid")


OUT_OF_RANGE = {
    "ts": st.one_of(st.floats(max_value=-1e-9, allow_infinity=False),
                    st.floats(min_value=MAX_TS + 1, allow_infinity=False),
                    st.integers(min_value=-(2**63), max_value=-1),
                    st.integers(min_value=MAX_TS + 1, max_value=2**63 - 1)),
    "rating": st.one_of(st.floats(max_value=0.49, allow_infinity=False),
                        st.floats(min_value=5.01, allow_infinity=False),
                        st.integers(min_value=-(2**63), max_value=0),
                        st.integers(min_value=6, max_value=2**63 - 1)),
    "completion": st.one_of(st.floats(max_value=-1e-9, allow_infinity=False),
                            st.floats(min_value=1.0001, allow_infinity=False)),
    "duration_s": st.floats(max_value=-1e-9, allow_infinity=False),
    "user_id": st.one_of(st.just(""), st.text(min_size=MAX_ID_CHARS + 1,
                                               max_size=MAX_ID_CHARS + 5)),
    "item_id": st.just(""),
    "event_id": st.one_of(st.just(""), st.just("e" * (MAX_ID_CHARS + 1))),
    "text": st.just(""),
}


@given(valid_events, st.data())
def test_out_of_range(kind_and_obj: tuple[str, dict[str, Any]], data: st.DataObject) -> None:
    kind, obj = kind_and_obj
    field = data.draw(st.sampled_from(
        [f for f in SCHEMA_BY_KIND[kind].model_fields if f in OUT_OF_RANGE]))
    obj[field] = data.draw(OUT_OF_RANGE[field])
    _assert_names(_rejected(kind, _dumps(obj)), field, "invalid")


def test_text_over_limit() -> None:
    raw = _dumps({"user_id": 1, "item_id": 2, "ts": 3, "text": "x" * (MAX_TEXT_CHARS + 1)})
    _assert_names(_rejected("review", raw), "text", "invalid")


@given(st.binary(min_size=1, max_size=64))
def test_non_utf8_bytes(junk: bytes) -> None:
    try:
        junk.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        assume(False)
    raw = b'{"user_id": "1", "item_id": "2", "ts": 3, "text": "' + junk + b'"}'
    _assert_names(_rejected("review", raw), "value", "not_utf8")


@pytest.mark.parametrize("raw", [b"", b"{", b'{"user_id": 1,}', b"not json", b"{'a': 1}",
                                 b'{"user_id": 1} trailing', b'{"text": "\\ud800"}'])
def test_invalid_json(raw: bytes) -> None:
    _assert_names(_rejected("rating", raw), "value", "bad_json")


@pytest.mark.parametrize("raw", [b"[]", b'[{"user_id": 1}]', b"1", b'"text"', b"null", b"true"])
def test_json_that_is_not_an_object(raw: bytes) -> None:
    _assert_names(_rejected("play", raw), "value", "not_object")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
@pytest.mark.parametrize("field", ["ts", "rating"])
def test_nan_and_infinity_in_json(literal: bytes, field: str) -> None:
    base = {"user_id": "1", "item_id": "2", "ts": 1, "rating": 3}
    base[field] = "@"
    raw = _dumps(base).replace(b'"@"', literal)
    _assert_names(_rejected("rating", raw), "value", "bad_json")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", ["ts", "rating"])
def test_nan_and_infinity_as_objects(value: float, field: str) -> None:
    obj = {"user_id": "1", "item_id": "2", "ts": 1, "rating": 3, field: value}
    with pytest.raises(RejectedEvent) as info:
        parse_event("rating", obj)
    _assert_names(info.value, field, "invalid")


@pytest.mark.parametrize("digits", [30, 400])
@pytest.mark.parametrize("field", ["user_id", "ts", "rating"])
def test_huge_numbers(digits: int, field: str) -> None:
    base = {"user_id": "1", "item_id": "2", "ts": 1, "rating": 3, field: "@"}
    raw = _dumps(base).replace(b'"@"', b"9" * digits)
    exc = _rejected("rating", raw)
    # orjson reads a 30-digit integer as a float (wrong type or out of range for the field) and
    # refuses a 400-digit one outright (whole message).
    if digits == 30:
        _assert_names(exc, field, "invalid")
    else:
        _assert_names(exc, "value", "bad_json")


@pytest.mark.parametrize("depth", [50, 5000])
def test_deeply_nested_json(depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    raw = b'{"user_id": "1", "item_id": "2", "ts": 1, "rating": ' + nested + b"}"
    exc = _rejected("rating", raw)
    if depth < 1000:
        _assert_names(exc, "rating", "invalid")
    else:
        _assert_names(exc, "value", "bad_json")


def test_oversize_message() -> None:
    raw = _dumps({"user_id": 1, "item_id": 2, "ts": 3, "text": "x" * 2000})
    _assert_names(_rejected("review", raw, max_bytes=1000), "value", "too_large")


def test_tombstone_and_unknown_topic() -> None:
    _assert_names(_rejected("ratings", None), "value", "empty")
    _assert_names(_rejected("clicks", b"{}"), "topic", "unknown_topic")


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([Play, Rating, Review]), st.data())
def test_reason_is_one_line(schema: type, data: st.DataObject) -> None:
    obj = data.draw(st.dictionaries(st.sampled_from(["user_id", "item_id", "ts", "rating", "text"]),
                                    st.one_of(st.none(), int64s, st.text(max_size=3)),
                                    max_size=5))
    try:
        decode_event(schema.kind, _dumps(obj))
    except RejectedEvent as exc:
        assert "\n" not in exc.reason
        assert exc.code == "invalid"


@pytest.mark.parametrize(("ts", "accepted"), [
    (1_700_003_600.0, True),  # the record's time plus the window: the boundary is accepted
    (1_700_003_600.5, False),
    (0.0, True),  # the past weighs little but is no reason to reject (backfills, replays)
    (1.49e10, False), (2e10, False), (32_503_680_000.0, False),  # far future, up to year 3000
])
def test_event_time_is_bounded_by_the_record_time(ts: float, accepted: bool) -> None:
    raw = orjson.dumps({"user_id": "u", "item_id": "i", "ts": ts})
    not_after = latest_event_ts(1_700_000_000.0, max_future_s=3_600.0)
    if accepted:
        assert decode_event("plays", raw, not_after=not_after).ts == ts
    else:
        with pytest.raises(RejectedEvent) as caught:
            decode_event("plays", raw, not_after=not_after)
        assert caught.value.code == "ts_out_of_range"
        assert "TASTEMAKER_MAX_EVENT_FUTURE_S" in caught.value.reason
    assert decode_event("plays", raw).ts == ts  # without a record time: the schema alone


def test_a_record_without_timestamp_is_measured_against_the_clock() -> None:
    assert abs(latest_event_ts(0.0, max_future_s=10.0) - (time.time() + 10.0)) < 5.0
    assert abs(latest_event_ts(-1.0, max_future_s=10.0) - (time.time() + 10.0)) < 5.0


def test_a_decay_that_saturates_within_the_years_ahead_fails_at_start() -> None:
    with pytest.raises(SettingsError, match="TASTEMAKER_DECAY_EPOCH.*TASTEMAKER_HALF_LIFE_DAYS"):
        load_settings(half_life_days=7.0, decay_epoch=1e9)  # 900 weeks after 2001: 2018
    assert load_settings(half_life_days=14.0, decay_epoch=time.time()).half_life_days == 14.0
    load_settings()  # the defaults (a half-life of 10 years) cover millennia


def test_recommendations_that_would_expire_inside_the_settle_window_fail_at_start() -> None:
    with pytest.raises(SettingsError, match="TASTEMAKER_RECS_TTL_S.*TASTEMAKER_SETTLE_WINDOW_S"):
        load_settings(recs_ttl_s=60.0, settle_window_s=3600.0)
    assert load_settings(recs_ttl_s=7200.0).recs_ttl_s == 7200.0
    with pytest.raises(SettingsError, match="TASTEMAKER_MAX_ITEMS"):
        load_settings(max_items=-1)


# --- the fast path decodes as pydantic does -------------------------------------------------------
# `decode_event` builds the common well-formed event without pydantic and hands anything else to
# it; `reference_decode` is the decoder as it was before. Fast and slow agree on every input:
# the same event field for field, or the same reject code and reason.

EDGE_FLOATS = [0.0, -0.0, 5e-324, 0.49999999999999994, 0.5, 1.0, 1.0000000000000002, 4.5, 5.0,
               5.000000000000001, float(MAX_TS), 32503680000.000004, 1e308, -1e-300, -1.0,
               float(2**53), float(2**64)]
EDGE_INTS = [0, 1, -1, 5, 6, 2**31, MAX_TS, MAX_TS + 1, 2**53, 2**53 + 1, -(2**53) - 1,
             2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30]
any_json = st.one_of(
    st.none(), st.booleans(), st.sampled_from(EDGE_FLOATS), st.sampled_from(EDGE_INTS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3), st.sampled_from(["", "x" * MAX_ID_CHARS, "x" * (MAX_ID_CHARS + 1),
                                          "é" * MAX_ID_CHARS, "x" * MAX_TEXT_CHARS,
                                          "x" * (MAX_TEXT_CHARS + 1), "4", "1e9", "nan"]),
    st.lists(st.integers(0, 9), max_size=2), st.dictionaries(st.text(max_size=2), st.none(),
                                                             max_size=1),
)
FIELDS = ["user_id", "item_id", "ts", "event_id", "rating", "text", "duration_s", "completion",
          "unknown_extra"]


def _json(obj: object) -> bytes:
    """JSON as any producer may write it: integers beyond 64 bits included (orjson refuses)."""
    return json.dumps(obj, allow_nan=False).encode()


def _assert_fast_is_slow(kind: str, raw: bytes | None, not_after: float | None = None) -> None:
    want = reference_decode(kind, raw, not_after=not_after)
    try:
        got: Event | RejectedEvent = decode_event(kind, raw, not_after=not_after)
    except RejectedEvent as exc:
        got = exc
    assert_same_outcome(got, want, raw)
    [batched] = decode_events(kind, [raw], not_after=not_after)
    assert_same_outcome(batched, want, raw)


not_afters = st.one_of(st.none(), st.sampled_from([0.0, 1e9, float(MAX_TS), 3e10]),
                       st.floats(min_value=0, max_value=4e10))


@settings(max_examples=500)
@given(valid_events, st.data())
def test_fast_path_equals_pydantic_on_mutated_fields(kind_and_obj: tuple[str, dict[str, Any]],
                                                     data: st.DataObject) -> None:
    kind, obj = kind_and_obj
    for _ in range(data.draw(st.integers(0, 3))):
        field = data.draw(st.sampled_from(FIELDS))
        if data.draw(st.booleans()):
            obj[field] = data.draw(any_json)
        else:
            obj.pop(field, None)
    _assert_fast_is_slow(data.draw(st.sampled_from(KINDS)), _json(obj), data.draw(not_afters))


@settings(max_examples=500)
@given(valid_events, st.data())
def test_fast_path_equals_pydantic_on_mutated_bytes(kind_and_obj: tuple[str, dict[str, Any]],
                                                    data: st.DataObject) -> None:
    kind, obj = kind_and_obj
    raw = bytearray(_json(obj) if data.draw(st.booleans()) else
                    json.dumps(obj, ensure_ascii=False).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw)))
        cut = data.draw(st.integers(0, 2))
        raw[at:at + cut] = data.draw(st.binary(max_size=3) | st.sampled_from(
            [b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\\ud800", b"1", b"-", b".",
             b"e9", b"null", b'"', b",", b"}"]))
    _assert_fast_is_slow(kind, bytes(raw), data.draw(not_afters))


class _Str(str):
    pass


class _Float(float):
    pass


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, False, _Str("7"),
                                   _Float(3.0), 10**400, -(10**400), 2**53 + 1, 1e308, -0.0,
                                   b"7", 3 + 0j, pytest.param(10**5000, id="10**5000")])
@pytest.mark.parametrize("field", ["user_id", "ts", "event_id", "rating", "duration_s",
                                   "completion", "text"])
@pytest.mark.parametrize("kind", KINDS)
def test_fast_path_equals_pydantic_on_python_values(kind: str, field: str, value: object
                                                    ) -> None:
    """`parse_event` takes Python values too (the replay, the reference model): NaN, subclasses,
    integers past any float go to pydantic."""
    obj = {"user_id": "u", "item_id": "i", "ts": 1.0, "rating": 3.0, "text": "t", field: value}
    try:
        want: Event | RejectedEvent = reference_parse(kind, obj)
    except RejectedEvent as exc:
        want = exc
    try:
        got: Event | RejectedEvent = parse_event(kind, obj)  # type: ignore[arg-type]
    except RejectedEvent as exc:
        got = exc
    assert_same_outcome(got, want, obj)


@pytest.fixture(scope="module")
def ml_values() -> list[tuple[str, bytes]]:
    """The ML-100K replay's 220,019 events as the replay encodes them."""
    cache_dir = load_settings().cache_dir
    ratings, _ = movielens_100k(cache_dir)
    return [(kind, encode_event(parse_event(kind, obj)))
            for kind, obj in movielens_events(ratings, labelled_reviews(cache_dir))]


def test_fast_path_equals_pydantic_on_the_ml_100k_replay(ml_values: list[tuple[str, bytes]]
                                                         ) -> None:
    not_after = latest_event_ts(0.0)
    for kind in KINDS:
        raws = [raw for k, raw in ml_values if k == kind]
        got = decode_events(kind + "s", raws, max_bytes=100_000, not_after=not_after)
        for raw, event in zip(raws, got, strict=True):
            assert_same_outcome(event, reference_decode(kind, raw, max_bytes=100_000,
                                                        not_after=not_after), raw)


def test_fast_path_equals_pydantic_on_mutated_ml_100k_events(ml_values: list[tuple[str, bytes]]
                                                             ) -> None:
    """Seeded mutations of replay events: content-hash dedup ids (no event_id), integer and
    boundary values, wrong types, nulls, missing fields, a time limit around the event's."""
    rng = random.Random(13)
    for kind, raw in rng.sample(ml_values, 20_000):
        obj = orjson.loads(raw)
        ts = obj["ts"]
        if rng.random() < 0.5:
            del obj["event_id"]
        for _ in range(rng.randrange(4)):
            field = rng.choice(FIELDS)
            if rng.random() < 0.7:
                obj[field] = rng.choice([*EDGE_FLOATS, *EDGE_INTS, None, True, "", "x" * 257,
                                         int(ts), ts, [], {}])
            else:
                obj.pop(field, None)
        not_after = rng.choice([None, ts, 1e9, 9e8])
        _assert_fast_is_slow(rng.choice([kind, *KINDS]), _json(obj), not_after)


def test_decode_events_is_decode_event_per_message() -> None:
    raws = [b'{"user_id": 1, "item_id": 2, "ts": 5, "rating": 4}', None, b"{",
            b'{"user_id": 1, "item_id": 2, "ts": 50, "rating": 4}', b"\xff"]
    got = decode_events("rating", raws, not_after=[10.0, 10.0, 10.0, 60.0, 10.0])
    assert [getattr(r, "code", None) for r in got] == [None, "empty", "bad_json", None,
                                                       "not_utf8"]
    assert [getattr(r, "code", None) for r in decode_events("rating", raws, not_after=10.0)][3] \
        == "ts_out_of_range"
    assert decode_events("ratings", []) == []
    unknown = decode_events("clicks", raws)
    assert [r.code for r in unknown] == ["unknown_topic"] * 5  # type: ignore[union-attr]
    assert len({id(r) for r in unknown}) == 5
    with pytest.raises(ValueError, match="not_after"):
        decode_events("rating", raws, not_after=[1.0])


@pytest.mark.parametrize(("key", "ok"), [
    (b"7", True), (b"u7", False), (None, False), (b"", False), (b"7 ", False),
    ("7".encode("utf-16"), False)])
def test_an_event_must_be_keyed_by_its_user_id(key: bytes | None, ok: bool) -> None:
    event = decode_event("ratings", b'{"user_id": 7, "item_id": "i", "rating": 4, "ts": 9}')
    if ok:
        assert check_event_key(event, key) is event  # integer ids compare as their text
    else:
        with pytest.raises(RejectedEvent, match="key: .*expected the event's user_id '7'") as e:
            check_event_key(event, key)
        assert e.value.code == "key_mismatch"
