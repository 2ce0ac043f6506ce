"""The 10,000 hostile messages of the fuzz test, checked against the pure decoder: every one is
rejected with one of the codes its kind declares, and a one-line reason. The integration fuzz test
(`tests/integration/test_faults.py`) sends the same messages through Kafka and a worker."""

from __future__ import annotations

import random
from collections import Counter

from streams.contract.events import RejectedEvent, decode_event, decode_events, latest_event_ts
from tests.hostile import FIVE_MB, MIX, assert_same_outcome, hostile_messages, reference_decode


def test_every_hostile_message_is_rejected_with_a_declared_code() -> None:
    messages = hostile_messages()
    not_after = latest_event_ts(0.0)  # as for a record sent now
    assert len(messages) == 10_000
    assert Counter(m.kind for m in messages) == {kind: n for kind, n, _ in MIX}
    for m in messages:
        try:
            event = decode_event(m.topic, m.value, max_bytes=1_000_000, not_after=not_after)
        except RejectedEvent as exc:
            assert exc.code in m.codes, (m.kind, m.value[:200] if m.value else m.value, exc)
            assert exc.reason and "\n" not in exc.reason, (m.kind, exc.reason)
        else:
            raise AssertionError(f"{m.kind} accepted: {m.value[:200]!r} -> {event!r}")


def test_the_mix_has_what_the_issue_asks_for() -> None:
    messages = hostile_messages()
    assert sum(1 for m in messages if m.value is not None and len(m.value) == FIVE_MB) == 3
    assert any(m.value is not None and m.value.startswith(b"[" * 100_000) for m in messages)
    assert any(m.key is None for m in messages) and any(m.value is None for m in messages)
    assert hostile_messages() == messages  # seeded: the same 10,000 every run


def test_every_hostile_message_gets_the_reject_of_the_pydantic_decoder() -> None:
    """The fast path rejects each exactly as the decoder before it: same code, same reason, in a
    batch (`decode_events`) as one by one; and mutations of them (bytes cut, doubled, flipped)."""
    messages = hostile_messages()
    not_after = latest_event_ts(0.0)
    for kind in ("play", "rating", "review"):
        raws = [m.value for m in messages if m.topic == kind]
        for raw, got in zip(raws, decode_events(kind, raws, not_after=not_after), strict=True):
            assert_same_outcome(got, reference_decode(kind, raw, not_after=not_after), raw)
    rng = random.Random(21)
    for m in rng.sample(messages, 3_000):
        if m.value is None or len(m.value) > 10_000:
            continue
        raw = bytearray(m.value)
        at = rng.randrange(len(raw) + 1)
        raw[at:at + rng.randrange(3)] = rng.choice([b"", raw[at:at + 4], rng.randbytes(2),
                                                    b"0", b"null", b'"', b"}"])
        for kind in ("play", "rating", "review"):
            [got] = decode_events(kind, [bytes(raw)], not_after=not_after)
            assert_same_outcome(got, reference_decode(kind, bytes(raw), not_after=not_after),
                                bytes(raw))
