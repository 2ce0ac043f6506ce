"""Erasing a user (``tastemaker erase-user USER_ID``): their keys, and their share of the item
statistics.

A user's contribution to the item statistics is a function of their current history alone (see
`models.cooccurrence.UserHistory`), so evicting every item of the history yields deltas that are
exactly the negative of everything the user's events added (up to float rounding).
`erase_user` writes, in ONE ``MULTI/EXEC`` guarded by ``WATCH hist:{user}``:

- the removal deltas to the ``deltas`` stream (every worker's in-memory statistics follow them,
  the last one also drops the user from the similar-user index);
- ``DEL`` of ``hist:``, ``recs:``, ``explain:``, ``recsmeta:`` and removal from every
  ``active:{topic}:{partition}`` set (and the ``users:{topic}:{partition}`` set of earlier
  versions);
- the user's mark in the ``erased`` hash: ``erased_at``, at least now and at least the user's
  latest event time;
- the user's sentences dropped from the review summaries (``summary:{item}``) of the items in
  their history (matched by `models.summary.author_tag`); those keys are watched too.

Races. If a worker commits a batch for the user between our read and our ``EXEC``, the
``WATCH`` fails and the erasure starts again from the new history. If we commit first, the
worker's commit sees the user's ``erased`` mark change and recomputes its batch; its
recommendation writes leave erased users out. Events of the user with ``ts <= erased_at`` are
ignored from then on (a replay after a crash, a producer retry, events still in Kafka), later
ones start a fresh history.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from models.summary import author_tag
from streams.connections import redis_async
from streams.contract.keys import Keys
from streams.runtime.state import UserState, delta_entry, dump_summary, load_summary
from streams.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ErasureReport:
    user_id: str
    history_items: int  # items in the user's history when erased
    deltas: int  # removal deltas sent to the deltas stream
    keys_deleted: int  # of hist:, recs:, explain:, recsmeta:
    erased_at: float  # the user's events at or before this time are ignored from now on
    summary_sentences: int = 0  # the user's review sentences removed from item summaries

    def summary(self) -> str:
        return (f"erased user {self.user_id}: {self.history_items} history items, "
                f"{self.deltas} removal deltas, {self.keys_deleted} keys deleted, "
                f"{self.summary_sentences} summary sentences removed; their events "
                f"up to ts {self.erased_at:.3f} will be ignored")


async def erase_user(settings: Settings, user_id: str, *, client: aioredis.Redis | None = None,
                     erased_at: float | None = None) -> ErasureReport:
    """Erase ``user_id`` (see the module doc); ``erased_at`` defaults to now."""
    own = client is None
    client = client or redis_async(settings)
    keys = Keys(settings.key_prefix)
    user_keys = [keys.history(user_id), keys.recs(user_id), keys.explain(user_id),
                 keys.recs_meta(user_id)]
    partitions = [(topic, partition) for topic in settings.event_topics
                  for partition in range(settings.topic_partitions)]
    active_sets = [keys.active(topic, partition) for topic, partition in partitions]
    member_sets = [keys.users(topic, partition) for topic, partition in partitions]
    try:
        while True:
            try:
                async with client.pipeline(transaction=True) as pipe:
                    await pipe.watch(keys.history(user_id))
                    state = UserState.from_bytes(await pipe.get(keys.history(user_id)))
                    history = state.history
                    summaries = await _summaries_without(pipe, keys, sorted(history.items),
                                                         author_tag(user_id))
                    latest = max((t for _, t, _ in history.items.values()), default=0.0)
                    at = max(time.time() if erased_at is None else erased_at, latest)
                    items = len(history.items)
                    deltas = history.forget(user_id=user_id)
                    pipe.multi()
                    pipe.delete(*user_keys)
                    for key in active_sets:
                        pipe.zrem(key, user_id)
                    for key in member_sets:
                        pipe.srem(key, user_id)
                    pipe.hset(keys.erased, user_id, repr(at))
                    for key, (value, _) in summaries.items():
                        pipe.set(key, value)
                    if deltas:
                        pipe.xadd(keys.deltas, delta_entry(deltas))
                    replies = await pipe.execute()
                break
            except WatchError:
                logger.info("user %s changed during the erasure; erasing again", user_id)
    finally:
        if own:
            await client.aclose()
    report = ErasureReport(user_id, items, len(deltas), int(replies[0]), at,
                           sum(n for _, n in summaries.values()))
    logger.info(report.summary())
    return report


async def _summaries_without(pipe, keys: Keys, items: list[str], author: str
                             ) -> dict[str, tuple[bytes, int]]:
    """The summaries of ``items`` holding sentences by ``author``, rewritten without them (key ->
    (new value, sentences removed)); watched, so a concurrent merge restarts the erasure."""
    if not items:
        return {}
    summary_keys = [keys.summary(item) for item in items]
    await pipe.watch(*summary_keys)
    changed = {}
    for key, raw in zip(summary_keys, await pipe.mget(summary_keys), strict=True):
        if raw is None:
            continue
        summary = load_summary(raw)
        removed = summary.remove_author(author)
        if removed:
            changed[key] = (dump_summary(summary), removed)
    return changed
