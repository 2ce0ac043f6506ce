"""The 10,000 hostile messages of the fuzz test, checked against the pure decoder: every one is
rejected with one of the codes its kind declares, and a one-line reason. The integration fuzz test
(`tests/integration/test_faults.py`) sends the same messages through Kafka and a worker."""

from __future__ import annotations

from collections import Counter

from streams.events import RejectedEvent, decode_event, latest_event_ts
from tests.hostile import FIVE_MB, MIX, hostile_messages


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
