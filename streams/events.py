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
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Annotated, ClassVar, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

EventKind = Literal["play", "rating", "review"]

MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 10_000
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
    float, BeforeValidator(_finite), Field(strict=True, ge=0, le=32503680000)  # < year 3000
]
Stars = Annotated[float, BeforeValidator(_finite), Field(strict=True, ge=0.5, le=5)]


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


def parse_event(kind: EventKind, obj: object) -> Event:
    """Validate an already-decoded JSON value as an event of ``kind``."""
    if not isinstance(obj, dict):
        raise RejectedEvent(
            f"value: expected a JSON object, got a JSON {type(obj).__name__}", code="not_object"
        )
    try:
        return SCHEMA_BY_KIND[kind].model_validate(obj)
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


def decode_event(topic_kind: EventKind | str, raw: bytes | None, *, max_bytes: int = 1_000_000,
                 not_after: float | None = None) -> Event:
    """Decode and validate one message value. ``topic_kind`` is ``play``/``rating``/``review`` or
    the plural topic name. Raises `RejectedEvent` for anything that is not a valid event,
    including (when ``not_after`` is given, see `latest_event_ts`) a ``ts`` after it."""
    kind = KIND_BY_TOPIC.get(topic_kind, topic_kind)
    if kind not in SCHEMA_BY_KIND:
        raise RejectedEvent(f"topic: no event schema for {topic_kind!r}", code="unknown_topic")
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
    event = parse_event(kind, obj)  # type: ignore[arg-type]
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
