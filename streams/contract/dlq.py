"""The dead-letter record: what a worker writes to the ``events-dlq`` topic for a rejected message.

A record is a small JSON object that says where the message came from and why it was rejected,
and carries the original value: as text when it is UTF-8, else base64 (``"encoding"`` tells
which), cut to the first ``max_value_bytes`` bytes so that a 5 MB message does not make a 5 MB
dead letter (``original_bytes`` keeps the real length, ``truncated`` says it was cut). The
original message key is meant to travel as the dead letter's Kafka key, so it is not repeated.

Pure: no clock inside; the caller passes ``rejected_at`` (epoch seconds) or leaves it out.

>>> record = dead_letter(b'{"user_id": 7}', topic="ratings", partition=2, offset=41,
...                      reason="item_id: Field required", code="invalid")
>>> letter = parse_dead_letter(record)
>>> letter["topic"], letter["offset"], letter["code"], letter["raw"]
('ratings', 41, 'invalid', b'{"user_id": 7}')
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

import orjson

Encoding = Literal["utf-8", "base64"]

DEFAULT_MAX_VALUE_BYTES = 64 * 1024

_REQUIRED = ("topic", "partition", "offset", "reason", "code", "value", "original_bytes")


def dead_letter(
    raw: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    code: str,
    rejected_at: float | None = None,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
) -> bytes:
    """The JSON dead-letter record of ``raw``, read at ``topic``/``partition``/``offset``.

    ``reason`` and ``code`` are those of the `streams.contract.events.RejectedEvent`. A ``None``
    value (a tombstone) is recorded as ``"value": null``.
    """
    if max_value_bytes < 0:
        raise ValueError(f"max_value_bytes must be >= 0, got {max_value_bytes}")
    record: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "reason": reason,
        "code": code,
    }
    if rejected_at is not None:
        record["rejected_at"] = rejected_at
    if raw is None:
        record.update(value=None, encoding=None, original_bytes=None, truncated=False)
        return orjson.dumps(record)
    kept = raw[:max_value_bytes]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    else:
        # The whole value is UTF-8, so a cut can only split the last character: drop its bytes.
        value, encoding = kept.decode("utf-8", errors="ignore"), "utf-8"
    record.update(
        value=value, encoding=encoding, original_bytes=len(raw), truncated=len(kept) < len(raw)
    )
    return orjson.dumps(record)


def parse_dead_letter(data: bytes) -> dict[str, Any]:
    """Read a dead-letter record back; adds ``raw``: the stored (possibly truncated) value bytes.

    Raises `ValueError` when ``data`` is not a dead-letter record.
    """
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"dead letter is not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError("dead letter is not a JSON object")
    missing = [name for name in _REQUIRED if name not in record]
    if missing:
        raise ValueError(f"dead letter lacks {', '.join(missing)}")
    value, encoding = record["value"], record.get("encoding")
    if value is None:
        record["raw"] = None
    elif encoding == "utf-8" and isinstance(value, str):
        record["raw"] = value.encode("utf-8")
    elif encoding == "base64" and isinstance(value, str):
        try:
            record["raw"] = base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"dead letter value is not base64 ({exc})") from None
    else:
        raise ValueError(f"dead letter has an unknown encoding {encoding!r}")
    return record
