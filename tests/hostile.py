"""Hostile input for the event topics: a seeded generator of malformed messages, each with the
reject codes it may earn (`streams.contract.events.RejectedEvent.code`).

Used by the unit contract test (every message is rejected with a declared code) and by the
integration fuzz test (every message reaches ``events-dlq`` with its source offset while the
valid stream around it is unchanged). Every kind below is invalid on *every* event topic unless
it names the one topic it targets, so none can slip through as a valid event (``far_future_ts``
is invalid against any record timestamp of this century, `streams.contract.events.latest_event_ts`).

`reference_decode` is the decoder before its fast path (pydantic for every event): the oracle the
fast path is held to, here and in `tests/unit/test_events.py`.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from streams.contract.events import (
    KIND_BY_TOPIC,
    SCHEMA_BY_KIND,
    Event,
    RejectedEvent,
    _reason,
    check_event_time,
    encode_event,
)

FIVE_MB = 5 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Hostile:
    kind: str  # what the generator made, for messages and counts
    topic: str  # "play" | "rating" | "review" | "any": the event kind it must be sent as
    key: bytes | None
    value: bytes | None
    codes: frozenset[str]  # the reject codes it may get


def _valid_base(rng: random.Random) -> dict:
    return {"user_id": f"u{rng.randrange(50)}", "item_id": f"i{rng.randrange(500)}",
            "ts": 1e9 + rng.randrange(10**6)}


def _junk_key(rng: random.Random) -> bytes | None:
    return rng.choice([None, b"", b"u1", bytes(rng.randrange(256) for _ in range(8)),
                       b"*", b"a:b", b"{x}"])


# --- the kinds: rng -> (value, event kind it targets or "any", codes) -----------------------------

Maker = Callable[[random.Random], tuple[bytes | None, str, set[str]]]


def not_utf8(rng: random.Random) -> tuple[bytes, str, set[str]]:
    body = bytearray(rng.randbytes(rng.randrange(1, 200)))
    body.insert(rng.randrange(len(body) + 1), 0xFF)  # 0xff never occurs in UTF-8
    return bytes(body), "any", {"not_utf8"}


def avro_like(rng: random.Random) -> tuple[bytes, str, set[str]]:
    """Confluent wire format: magic 0, 4-byte schema id, then zigzag varints and strings."""
    body = b"\x00" + rng.randrange(2**32).to_bytes(4, "big") + bytes([rng.randrange(0, 128, 2)])
    body += b"\x0au1234" + rng.randbytes(rng.randrange(0, 40))
    return body, "any", {"not_utf8", "bad_json"}


def protobuf_like(rng: random.Random) -> tuple[bytes, str, set[str]]:
    """Field 1 (string user id), field 2 (string item id), field 3 (varint ts)."""
    user, item = f"u{rng.randrange(99)}".encode(), f"i{rng.randrange(999)}".encode()
    ts = rng.randrange(2**31)
    varint = bytearray()
    while True:
        byte, ts = ts & 0x7F, ts >> 7
        varint.append(byte | (0x80 if ts else 0))
        if not ts:
            break
    body = b"\x0a" + bytes([len(user)]) + user + b"\x12" + bytes([len(item)]) + item
    return body + b"\x18" + bytes(varint), "any", {"not_utf8", "bad_json"}


def xml(rng: random.Random) -> tuple[bytes, str, set[str]]:
    return (f'<?xml version="1.0"?><play><user_id>u{rng.randrange(99)}</user_id>'
            f"<item_id>i{rng.randrange(99)}</item_id><ts>1000000000</ts></play>").encode(), "any", {
        "bad_json"}


def csv(rng: random.Random) -> tuple[bytes, str, set[str]]:
    return f"u{rng.randrange(99)},i{rng.randrange(99)},1000000000,4.5\n".encode(), "any", {
        "bad_json"}


def deeply_nested(rng: random.Random) -> tuple[bytes, str, set[str]]:
    depth = 100_000
    return rng.choice([b"[" * depth, b"[" * depth + b"]" * depth, b'{"a":' * depth]), "any", {
        "bad_json"}


def huge_number(rng: random.Random) -> tuple[bytes, str, set[str]]:
    base = _valid_base(rng)
    field = rng.choice(["ts", "user_id", "item_id"])
    literal = rng.choice([b"1e400", b"-1e400", b"1" + b"0" * 1000, b"-" + b"9" * 400])
    raw = orjson.dumps({**base, field: 0}).replace(f'"{field}":0'.encode(),
                                                   f'"{field}":'.encode() + literal)
    return raw, "any", {"bad_json"}


def big_but_finite(rng: random.Random) -> tuple[bytes, str, set[str]]:
    """Parses (a double, or an integer above 2**64 read as one) but is out of range/wrong type."""
    base = _valid_base(rng)
    field, value = rng.choice([("ts", 1e308), ("ts", 2**64), ("user_id", 1e300),
                               ("item_id", 18446744073709551616.0), ("ts", -1.0)])
    return json.dumps({**base, field: value}).encode(), "any", {"invalid"}  # orjson: <= 64 bits


def nan_infinity(rng: random.Random) -> tuple[bytes, str, set[str]]:
    base = _valid_base(rng)
    raw = orjson.dumps({**base, "ts": 0}).replace(
        b'"ts":0', b'"ts":' + rng.choice([b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf"]))
    return raw, "any", {"bad_json"}


def empty(rng: random.Random) -> tuple[bytes | None, str, set[str]]:
    """No value (a tombstone) or nothing but whitespace."""
    value, codes = rng.choice([(b"", {"bad_json"}), (None, {"empty"}), (b" ", {"bad_json"}),
                               (b"\n", {"bad_json"})])
    return value, "any", codes


def not_an_object(rng: random.Random) -> tuple[bytes, str, set[str]]:
    value = rng.choice([b"[1,2,3]", b'"a string"', b"42", b"null", b"true", b"[]", b"1.5"])
    return value, "any", {"not_object"}


def metacharacter_ids_but_invalid(rng: random.Random) -> tuple[bytes, str, set[str]]:
    """Ids full of Redis-key metacharacters in events that are invalid for another reason."""
    odd = rng.choice(["*", "a:b", "a b", "a\nb", "{a}", "?[*]", "\r\n*3\r\n", "\x00"])
    variant = rng.randrange(3)
    if variant == 0:  # no ts
        obj: dict = {"user_id": odd, "item_id": odd}
    elif variant == 1:  # id over the length limit
        obj = {"user_id": odd * 300, "item_id": odd, "ts": 1e9}
    else:  # empty item id
        obj = {"user_id": odd, "item_id": "", "ts": 1e9}
    return orjson.dumps(obj), "any", {"invalid"}


def wrong_types(rng: random.Random) -> tuple[bytes, str, set[str]]:
    base = _valid_base(rng)
    field, value = rng.choice([("user_id", []), ("user_id", {}), ("user_id", True),
                               ("item_id", 1.5), ("item_id", None), ("ts", "1000000000"),
                               ("ts", True), ("ts", None), ("event_id", 7)])
    return orjson.dumps({**base, field: value}), "any", {"invalid"}


def missing_field(rng: random.Random) -> tuple[bytes, str, set[str]]:
    base = _valid_base(rng)
    del base[rng.choice(["user_id", "item_id", "ts"])]
    return orjson.dumps(base), "any", {"invalid"}


def bad_rating(rng: random.Random) -> tuple[bytes, str, set[str]]:
    value = rng.choice([0, 0.4, 5.5, -1, 1e9, "five", None, [4]])
    return orjson.dumps({**_valid_base(rng), "rating": value}), "rating", {"invalid"}


def bad_play(rng: random.Random) -> tuple[bytes, str, set[str]]:
    field, value = rng.choice([("completion", 1.5), ("completion", -0.1), ("duration_s", -3),
                               ("completion", "half")])
    return orjson.dumps({**_valid_base(rng), field: value}), "play", {"invalid"}


def bad_review(rng: random.Random) -> tuple[bytes, str, set[str]]:
    text = rng.choice(["", "x" * 10_001, None, 42])
    return orjson.dumps({**_valid_base(rng), "text": text}), "review", {"invalid"}


def truncated(rng: random.Random) -> tuple[bytes, str, set[str]]:
    raw = orjson.dumps({**_valid_base(rng), "rating": 4, "text": "fine"})
    return raw[:rng.randrange(1, len(raw) - 1)], "any", {"bad_json"}


def bad_escapes(rng: random.Random) -> tuple[bytes, str, set[str]]:
    """Lone surrogates and raw control characters: valid UTF-8, invalid JSON."""
    bad = rng.choice([b"\\ud800", b"\\udfff", b"\x01", b"\x1f", b"\\x41"])
    return b'{"user_id": "u' + bad + b'", "item_id": "i", "ts": 1}', "any", {"bad_json"}


def junk_text(rng: random.Random) -> tuple[bytes, str, set[str]]:
    """Printable noise that is not JSON (never starts a valid JSON value)."""
    chars = string.ascii_letters + string.punctuation + " "
    return ("~" + "".join(rng.choice(chars) for _ in range(rng.randrange(1, 80)))).encode(), (
        "any"), {"bad_json"}


def far_future_ts(rng: random.Random) -> tuple[bytes, str, set[str]]:
    """A valid event but for its time, far after its record's: the poison pill that once stopped
    every worker (issue "Correctness holes", part 1). Sent now, each is past the one-day window;
    the schema's own limit (year 3000) and values just below the old decay overflow included."""
    ts = rng.choice([32_503_680_000, 32_503_679_999.5, 2e10, 1.49e10, 4.1e9, 1e10])
    return orjson.dumps({**_valid_base(rng), "ts": ts, "rating": 4, "text": "fine"}), "any", {
        "ts_out_of_range"}


def five_megabytes(rng: random.Random) -> tuple[bytes, str, set[str]]:
    """A 5 MB message: otherwise a fine review, over any sane ``max_message_bytes``."""
    head = orjson.dumps({**_valid_base(rng), "text": ""})[:-2]  # ends with "text":"
    return head + b"a" * (FIVE_MB - len(head) - 2) + b'"}', "review", {"too_large"}


#: (kind, how many in a 10,000 mix, maker). Deep nesting and 5 MB messages are few: they are
#: about depth and size, and each costs 100 KB / 5 MB of broker and test memory.
MIX: list[tuple[str, int, Maker]] = [
    ("five_megabytes", 3, five_megabytes),
    ("deeply_nested", 40, deeply_nested),
    ("not_utf8", 900, not_utf8),
    ("avro_like", 600, avro_like),
    ("protobuf_like", 600, protobuf_like),
    ("xml", 500, xml),
    ("csv", 500, csv),
    ("huge_number", 700, huge_number),
    ("big_but_finite", 500, big_but_finite),
    ("nan_infinity", 600, nan_infinity),
    ("empty", 500, empty),
    ("not_an_object", 500, not_an_object),
    ("metacharacter_ids_but_invalid", 700, metacharacter_ids_but_invalid),
    ("wrong_types", 600, wrong_types),
    ("missing_field", 500, missing_field),
    ("bad_rating", 400, bad_rating),
    ("bad_play", 300, bad_play),
    ("bad_review", 257, bad_review),
    ("truncated", 500, truncated),
    ("bad_escapes", 300, bad_escapes),
    ("junk_text", 400, junk_text),
    ("far_future_ts", 100, far_future_ts),
]
assert sum(n for _, n, _ in MIX) == 10_000


def hostile_messages(seed: int = 8) -> list[Hostile]:
    """The 10,000 malformed messages of `MIX`, shuffled by ``seed``; deterministic."""
    rng = random.Random(seed)
    out = []
    for kind, n, maker in MIX:
        for _ in range(n):
            value, topic, codes = maker(rng)
            if topic == "any":
                topic = rng.choice(["play", "rating", "review"])
            key = _junk_key(rng)
            if key is None and value is None:  # Kafka has no message without key and value
                key = b"tombstone"
            out.append(Hostile(kind, topic, key, value, frozenset(codes)))
    rng.shuffle(out)
    return out


# --- the oracle for the decoder's fast path -------------------------------------------------------

def reference_decode(kind: str, raw: bytes | None, *, max_bytes: int = 1_000_000,
                     not_after: float | None = None) -> Event | RejectedEvent:
    """`streams.contract.events.decode_event` as it was before its fast path: every event through
    pydantic. Returns the event or the `RejectedEvent` it raised."""
    try:
        kind = KIND_BY_TOPIC.get(kind, kind)
        if kind not in SCHEMA_BY_KIND:
            raise RejectedEvent(f"topic: no event schema for {kind!r}", code="unknown_topic")
        if raw is None:
            raise RejectedEvent("value: message has no value", code="empty")
        if len(raw) > max_bytes:
            raise RejectedEvent(
                f"value: message of {len(raw)} bytes is over the {max_bytes}-byte limit",
                code="too_large")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RejectedEvent(f"value: not UTF-8 ({exc.reason} at byte {exc.start})",
                                code="not_utf8") from None
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise RejectedEvent(f"value: invalid JSON ({exc})", code="bad_json") from None
        event = reference_parse(kind, obj)
        if not_after is not None:
            check_event_time(event, not_after=not_after)
        return event
    except RejectedEvent as exc:
        return exc


def reference_parse(kind: str, obj: object) -> Event:
    """`streams.contract.events.parse_event` through pydantic alone."""
    if not isinstance(obj, dict):
        raise RejectedEvent(
            f"value: expected a JSON object, got a JSON {type(obj).__name__}", code="not_object")
    try:
        return SCHEMA_BY_KIND[kind].model_validate(obj)  # type: ignore[index,return-value]
    except ValidationError as exc:
        raise RejectedEvent(_reason(exc), code="invalid") from None


def reference_dedup_id(event: Event) -> str:
    """`streams.contract.events._Event.dedup_id` through ``model_dump``."""
    if event.event_id is not None:
        return event.event_id
    body = orjson.dumps(event.model_dump(exclude={"event_id"}), option=orjson.OPT_SORT_KEYS)
    return "h:" + hashlib.blake2b(body, digest_size=12).hexdigest()


def assert_same_outcome(got: Event | RejectedEvent, want: Event | RejectedEvent,
                        context: object = None) -> None:
    """The same event (field values of the same types, down to -0.0, the same fields set, the
    same encoding and dedup id), or the same reject code and reason."""
    if isinstance(want, RejectedEvent):
        assert isinstance(got, RejectedEvent), (context, got, want.reason)
        assert (got.code, got.reason) == (want.code, want.reason), context
        return
    assert not isinstance(got, RejectedEvent), (context, got.reason, want)
    assert type(got) is type(want), context
    state, wanted = got.__getstate__(), want.__getstate__()
    assert [(k, type(v), repr(v)) for k, v in state.pop("__dict__").items()] == [
        (k, type(v), repr(v)) for k, v in wanted.pop("__dict__").items()], context
    assert state == wanted, context
    assert got == want and hash(got) == hash(want), context
    assert encode_event(got) == encode_event(want), context
    assert got.dedup_id() == reference_dedup_id(want), context
