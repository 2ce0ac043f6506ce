"""The dead-letter record: round trip, encodings, truncation, purity."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.contract.dlq import DEFAULT_MAX_VALUE_BYTES, dead_letter, parse_dead_letter

WHERE = {"topic": "ratings", "partition": 3, "offset": 1234}


def test_utf8_value_kept_as_text() -> None:
    raw = '{"user_id": "é", "text": "ok"}'.encode()
    record = orjson.loads(dead_letter(raw, **WHERE, reason="item_id: Field required",
                                      code="invalid"))
    assert record["encoding"] == "utf-8"
    assert record["value"] == raw.decode()
    assert record["original_bytes"] == len(raw)
    assert record["truncated"] is False
    assert record["reason"] == "item_id: Field required"
    assert record["code"] == "invalid"
    assert (record["topic"], record["partition"], record["offset"]) == ("ratings", 3, 1234)
    assert "rejected_at" not in record  # no clock inside


def test_binary_value_kept_as_base64() -> None:
    raw = b"\xff\xfe{not utf-8"
    letter = parse_dead_letter(dead_letter(raw, **WHERE, reason="value: not UTF-8",
                                           code="not_utf8"))
    assert letter["encoding"] == "base64"
    assert letter["raw"] == raw


def test_tombstone() -> None:
    letter = parse_dead_letter(dead_letter(None, **WHERE, reason="value: message has no value",
                                           code="empty"))
    assert letter["raw"] is None and letter["value"] is None
    assert letter["original_bytes"] is None


def test_rejected_at_from_caller() -> None:
    letter = parse_dead_letter(dead_letter(b"x", **WHERE, reason="r", code="c",
                                           rejected_at=1_700_000_000.5))
    assert letter["rejected_at"] == 1_700_000_000.5


def test_deterministic() -> None:
    args = dict(**WHERE, reason="r", code="c")
    assert dead_letter(b"abc", **args) == dead_letter(b"abc", **args)


def test_five_megabytes_make_a_small_record() -> None:
    raw = b'{"text": "' + b"a" * 5_000_000 + b'"}'
    record = dead_letter(raw, **WHERE, reason="value: too large", code="too_large")
    assert len(record) < DEFAULT_MAX_VALUE_BYTES + 1024
    letter = parse_dead_letter(record)
    assert letter["truncated"] is True
    assert letter["original_bytes"] == len(raw)
    assert letter["raw"] == raw[:DEFAULT_MAX_VALUE_BYTES]


def test_truncation_never_splits_a_character() -> None:
    raw = "é".encode() * 10  # two bytes each
    letter = parse_dead_letter(dead_letter(raw, **WHERE, reason="r", code="c",
                                           max_value_bytes=5))
    assert letter["encoding"] == "utf-8"
    assert letter["value"] == "éé"
    assert letter["truncated"] is True


def test_binary_truncated_to_limit() -> None:
    raw = b"\xff" * 100
    letter = parse_dead_letter(dead_letter(raw, **WHERE, reason="r", code="c",
                                           max_value_bytes=10))
    assert letter["raw"] == raw[:10] and letter["original_bytes"] == 100


@given(raw=st.binary(max_size=300), limit=st.integers(min_value=0, max_value=400))
def test_round_trip_keeps_a_prefix(raw: bytes, limit: int) -> None:
    letter = parse_dead_letter(dead_letter(raw, **WHERE, reason="r", code="c",
                                           max_value_bytes=limit))
    assert raw.startswith(letter["raw"])
    assert len(raw) - len(letter["raw"]) <= max(0, len(raw) - limit) + 3  # at most a split char
    assert letter["truncated"] == (len(raw) > limit)
    assert letter["original_bytes"] == len(raw)


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[]", b'{"topic": "x"}',
     b'{"topic":"t","partition":0,"offset":0,"reason":"r","code":"c","value":"x",'
     b'"original_bytes":1,"encoding":"rot13"}',
     b'{"topic":"t","partition":0,"offset":0,"reason":"r","code":"c","value":"@@",'
     b'"original_bytes":1,"encoding":"base64"}'],
)
def test_parse_rejects_what_is_not_a_dead_letter(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_dead_letter(data)
