"""The event contract: what users produce to the ``plays``, ``ratings`` and ``reviews`` topics.

Values are UTF-8 JSON objects; the message key is the user id. Integer ids are accepted and
normalised to strings; unknown extra fields are ignored. Anything else is rejected with a
`RejectedEvent` whose reason names the field at fault:

>>> decode_event("ratings", b'{"user_id": 7, "item_id": "42", "rating": 4.5, "ts": 881250949}')
Rating(user_id='7', item_id='42', ts=881250949.0, event_id=None, rating=4.5)
>>> try:
...     decode_event("ratings", b'{"user_id": "7", "item_id": "42", "rating": 9, "ts": 1}')
... except RejectedEvent as e:
...     print(e.reason)
rating: Input should be less than or equal to 5

A worker decodes a batch of one topic's values with `decode_events`: the event or the
`RejectedEvent` of each, in order. The common well-formed event skips pydantic (`_fast_event`);
every other goes through it, so events and reject reasons are pydantic's.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

EventKind = Literal["play", "rating", "review"]

MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 10_000
MAX_TS = 32_503_680_000  # the year 3000
MIN_STARS, MAX_STARS = 0.5, 5
#: How far an event's ``ts`` may lie after its Kafka record's timestamp (the default of
#: ``TASTEMAKER_MAX_EVENT_FUTURE_S``): clocks drift and clients batch, but an event from the
#: future weighs more than every event before it (forward decay), so one far-future ``ts``
#: would swamp the statistics of the items it touches.
MAX_EVENT_FUTURE_S = 86_400.0


def _id_to_str(value: object) -> object:
    """Accept integer ids (not bools, not floats) and normalise them to strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Id = Annotated[
    str, BeforeValidator(_id_to_str), Field(strict=True, min_length=1, max_length=MAX_ID_CHARS)
]
# strict: JSON numbers only; true/false and numeric strings are not silently read as numbers.
Timestamp = Annotated[
    float, BeforeValidator(_finite), Field(strict=True, ge=0, le=MAX_TS)
]
Stars = Annotated[float, BeforeValidator(_finite), Field(strict=True, ge=MIN_STARS, le=MAX_STARS)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    user_id: Id
    item_id: Id
    ts: Timestamp
    event_id: Annotated[str, Field(strict=True, min_length=1, max_length=MAX_ID_CHARS)] | None = (
        None)

    kind: ClassVar[EventKind]

    def dedup_id(self) -> str:
        """The event's dedup key: its ``event_id``, else a hash of its content."""
        if self.event_id is not None:
            return self.event_id
        # the fields' values as they are: what model_dump(exclude={"event_id"}) gives for these
        # flat str/float fields, without its ~2 µs
        content = {k: v for k, v in self.__dict__.items() if k != "event_id"}
        body = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        return "h:" + hashlib.blake2b(body, digest_size=12).hexdigest()


class Play(_Event):
    kind: ClassVar[EventKind] = "play"
    duration_s: Annotated[float, BeforeValidator(_finite), Field(strict=True, ge=0)] | None = None
    completion: Annotated[
        float, BeforeValidator(_finite), Field(strict=True, ge=0, le=1)
    ] | None = None


class Rating(_Event):
    kind: ClassVar[EventKind] = "rating"
    rating: Stars


class Review(_Event):
    kind: ClassVar[EventKind] = "review"
    text: Annotated[str, Field(strict=True, min_length=1, max_length=MAX_TEXT_CHARS)]
    rating: Stars | None = None


Event = Play | Rating | Review

SCHEMA_BY_KIND: dict[EventKind, type[_Event]] = {"play": Play, "rating": Rating, "review": Review}


class RejectedEvent(ValueError):
    """An event that cannot be processed; `reason` is one human-readable line naming the field."""

    def __init__(self, reason: str, *, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code  # short machine label for metrics: not_utf8, bad_json, too_large, ...


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)


# --- the fast path -------------------------------------------------------------------------------
# Pydantic validation costs several µs an event (its Python BeforeValidators, then building a
# frozen model), most of the decoding. Nearly every event is the common shape: exact
# str/int/float values inside their limits. `_fast_event` checks that shape in plain Python and
# builds the model as `BaseModel.model_construct` does; anything else goes to `model_validate`,
# so every reject keeps pydantic's reason. The tests hold the two paths equal.

_EXACT_INT = 2**53  # ints a float holds exactly: float(v) is what pydantic makes of them
_ID_INT = 2**64  # the integers JSON gives us; str() of one is within MAX_ID_CHARS
_MAX_FLOAT = sys.float_info.max
#: the fields `_fast_event` checks, per schema: a field added to a schema needs its check there
_FIELDS: dict[type[_Event], frozenset[str]] = {
    Play: frozenset({"user_id", "item_id", "ts", "event_id", "duration_s", "completion"}),
    Rating: frozenset({"user_id", "item_id", "ts", "event_id", "rating"}),
    Review: frozenset({"user_id", "item_id", "ts", "event_id", "text", "rating"}),
}
assert all(_FIELDS[schema] == set(schema.model_fields)
           and all(field.is_required() or field.default is None
                   for field in schema.model_fields.values())
           for schema in SCHEMA_BY_KIND.values())
_set = object.__setattr__


def _int_id(value: int) -> str | int:
    return str(value) if -_ID_INT < value < _ID_INT else value


def _int_float(value: int) -> float | int:
    return float(value) if -_EXACT_INT <= value <= _EXACT_INT else value


def _fast_event(schema: type[_Event], obj: dict[str, Any]) -> _Event | None:
    """``obj`` as a ``schema`` event when every field is already valid as it is, else None.
    Exact types only (no bool, no subclasses); the float bounds are finite, so NaN and the
    infinities fail them; optional fields are None when absent or null, as their defaults."""
    get = obj.get
    user_id, item_id, ts, event_id = get("user_id"), get("item_id"), get("ts"), get("event_id")
    if type(user_id) is int:
        user_id = _int_id(user_id)
    if type(item_id) is int:
        item_id = _int_id(item_id)
    if type(ts) is int:
        ts = _int_float(ts)
    if not (type(user_id) is str and 0 < len(user_id) <= MAX_ID_CHARS
            and type(item_id) is str and 0 < len(item_id) <= MAX_ID_CHARS
            and type(ts) is float and 0.0 <= ts <= MAX_TS
            and (event_id is None
                 or type(event_id) is str and 0 < len(event_id) <= MAX_ID_CHARS)):
        return None
    values = {"user_id": user_id, "item_id": item_id, "ts": ts, "event_id": event_id}
    rating = get("rating")
    if type(rating) is int:
        rating = _int_float(rating)
    if schema is Rating:
        if not (type(rating) is float and MIN_STARS <= rating <= MAX_STARS):
            return None
        values["rating"] = rating
    elif schema is Play:
        duration_s, completion = get("duration_s"), get("completion")
        if type(duration_s) is int:
            duration_s = _int_float(duration_s)
        if type(completion) is int:
            completion = _int_float(completion)
        if not ((duration_s is None
                 or type(duration_s) is float and 0.0 <= duration_s <= _MAX_FLOAT)
                and (completion is None
                     or type(completion) is float and 0.0 <= completion <= 1.0)):
            return None
        values["duration_s"], values["completion"] = duration_s, completion
    else:
        text = get("text")
        if not (type(text) is str and 0 < len(text) <= MAX_TEXT_CHARS
                and (rating is None or type(rating) is float and MIN_STARS <= rating <= MAX_STARS)):
            return None
        values["text"], values["rating"] = text, rating
    event = schema.__new__(schema)  # as BaseModel.model_construct builds one
    _set(event, "__dict__", values)
    # the fields obj gives, null ones included: what pydantic records as set
    _set(event, "__pydantic_fields_set__", obj.keys() & _FIELDS[schema])
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


def parse_event(kind: EventKind, obj: object) -> Event:
    """Validate an already-decoded JSON value as an event of ``kind``."""
    if not isinstance(obj, dict):
        raise RejectedEvent(
            f"value: expected a JSON object, got a JSON {type(obj).__name__}", code="not_object"
        )
    schema = SCHEMA_BY_KIND[kind]
    if type(obj) is dict:
        event = _fast_event(schema, obj)
        if event is not None:
            return event  # type: ignore[return-value]
    try:
        return schema.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as exc:
        raise RejectedEvent(_reason(exc), code="invalid") from None


def latest_event_ts(record_ts: float, *, max_future_s: float = MAX_EVENT_FUTURE_S) -> float:
    """The latest ``ts`` accepted for an event whose Kafka record has timestamp ``record_ts``
    (seconds): ``max_future_s`` after it. A record without a timestamp (0 or less: Kafka before
    0.10) is measured against this machine's clock instead.

    >>> latest_event_ts(1_700_000_000.0, max_future_s=60.0)
    1700000060.0
    """
    return (record_ts if record_ts > 0 else time.time()) + max_future_s


def check_event_time(event: Event, *, not_after: float) -> Event:
    """``event``, or `RejectedEvent` (``ts_out_of_range``) when its ``ts`` is after ``not_after``.

    >>> play = Play(user_id="u", item_id="i", ts=2e10)
    >>> try:
    ...     check_event_time(play, not_after=1.7e9)
    ... except RejectedEvent as e:
    ...     print(e.code)
    ts_out_of_range
    """
    if event.ts > not_after:
        raise RejectedEvent(
            f"ts: {event.ts:.0f} is {event.ts - not_after:.0f} s after the latest accepted time "
            f"{not_after:.0f} (the record's timestamp plus TASTEMAKER_MAX_EVENT_FUTURE_S)",
            code="ts_out_of_range")
    return event


def check_event_key(event: Event, key: bytes | None) -> Event:
    """``event``, or `RejectedEvent` (``key_mismatch``) when the record's key is not its user id
    (UTF-8): Kafka partitions by key, and each user's events must stay on one partition, so
    that one worker at a time updates their history.

    >>> play = Play(user_id="u1", item_id="i", ts=1.0)
    >>> check_event_key(play, b"u1").user_id
    'u1'
    >>> try:
    ...     check_event_key(play, None)
    ... except RejectedEvent as e:
    ...     print(e.code, "-", e.reason)
    key_mismatch - key: none, expected the event's user_id 'u1'
    """
    if key is None or key != event.user_id.encode():
        shown = "none" if key is None else repr(key.decode(errors="replace")[:80])
        raise RejectedEvent(f"key: {shown}, expected the event's user_id {event.user_id!r}",
                            code="key_mismatch")
    return event


def decode_event(topic_kind: EventKind | str, raw: bytes | None, *, max_bytes: int = 1_000_000,
                 not_after: float | None = None) -> Event:
    """Decode and validate one message value. ``topic_kind`` is ``play``/``rating``/``review`` or
    the plural topic name. Raises `RejectedEvent` for anything that is not a valid event,
    including (when ``not_after`` is given, see `latest_event_ts`) a ``ts`` after it."""
    return _decode(_kind_of(topic_kind), raw, max_bytes, not_after)


def decode_events(topic_kind: EventKind | str, raws: Sequence[bytes | None], *,
                  max_bytes: int = 1_000_000,
                  not_after: float | Sequence[float] | None = None
                  ) -> list[Event | RejectedEvent]:
    """`decode_event` over a batch of one topic's message values: for each, in order, its event
    or the `RejectedEvent` it would raise. ``not_after`` is one time for all, or one per message
    (`latest_event_ts` of each record's timestamp).

    >>> [getattr(r, "code", r) for r in decode_events("ratings", [
    ...     b'{"user_id": 7, "item_id": "42", "rating": 4, "ts": 9}', b"{", None])]
    [Rating(user_id='7', item_id='42', ts=9.0, event_id=None, rating=4.0), 'bad_json', 'empty']
    """
    limits: Sequence[float | None]
    if not_after is None or isinstance(not_after, float | int):
        limits = [not_after] * len(raws)
    elif len(not_after) != len(raws):
        raise ValueError(f"not_after: {len(not_after)} times for {len(raws)} messages")
    else:
        limits = not_after
    try:
        kind = _kind_of(topic_kind)
    except RejectedEvent as exc:
        return [RejectedEvent(exc.reason, code=exc.code) for _ in raws]
    out: list[Event | RejectedEvent] = []
    for raw, limit in zip(raws, limits, strict=True):
        try:
            out.append(_decode(kind, raw, max_bytes, limit))
        except RejectedEvent as exc:
            out.append(exc)
    return out


def _kind_of(topic_kind: EventKind | str) -> EventKind:
    kind = KIND_BY_TOPIC.get(topic_kind, topic_kind)
    if kind not in SCHEMA_BY_KIND:
        raise RejectedEvent(f"topic: no event schema for {topic_kind!r}", code="unknown_topic")
    return kind  # type: ignore[return-value]


def _decode(kind: EventKind, raw: bytes | None, max_bytes: int, not_after: float | None) -> Event:
    if type(raw) is bytes and len(raw) <= max_bytes:  # the common event, in fewest steps
        try:
            obj = orjson.loads(raw)  # orjson checks UTF-8 itself
        except orjson.JSONDecodeError:
            obj = None
        if type(obj) is dict:
            event = _fast_event(SCHEMA_BY_KIND[kind], obj)
            if event is not None and (not_after is None or event.ts <= not_after):
                return event  # type: ignore[return-value]
    # anything else, step by step, for the reject and its reason
    if raw is None:
        raise RejectedEvent("value: message has no value", code="empty")
    if len(raw) > max_bytes:
        raise RejectedEvent(
            f"value: message of {len(raw)} bytes is over the {max_bytes}-byte limit",
            code="too_large",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedEvent(f"value: not UTF-8 ({exc.reason} at byte {exc.start})",
                            code="not_utf8") from None
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RejectedEvent(f"value: invalid JSON ({exc})", code="bad_json") from None
    event = parse_event(kind, obj)
    if not_after is not None:
        check_event_time(event, not_after=not_after)
    return event


KIND_BY_TOPIC: dict[str, EventKind] = {"plays": "play", "ratings": "rating", "reviews": "review"}


def kind_of_topic(topic: str, *, plays: str, ratings: str, reviews: str) -> EventKind | None:
    """Map a configured topic name to its event kind."""
    return {plays: "play", ratings: "rating", reviews: "review"}.get(topic)  # type: ignore[return-value]


def encode_event(event: Event) -> bytes:
    """The JSON value users produce (``kind`` is implied by the topic and not written)."""
    return orjson.dumps(event.model_dump(exclude_none=True))
