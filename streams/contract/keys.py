"""The Redis key layout: a public contract any Redis client can read (docs/contract.md,
"The Redis contract").

Every key starts with the optional ``key_prefix`` setting.

>>> k = Keys("demo:")
>>> k.recs("196"), k.explain("196"), k.neighbours("242"), k.summary("242")
('demo:recs:196', 'demo:explain:196', 'demo:nbrs:242', 'demo:summary:242')
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = ""

    # --- public: what users read ----------------------------------------------------------------
    def recs(self, user_id: str) -> str:
        """Sorted set: member = item id, score = relevance (higher first); top-N."""
        return f"{self.prefix}recs:{user_id}"

    def explain(self, user_id: str) -> str:
        """Hash: item id -> JSON {"because": [item ids], "source": "items"|"users"|"trending"}."""
        return f"{self.prefix}explain:{user_id}"

    def recs_meta(self, user_id: str) -> str:
        """Hash: updated_at (epoch s, wall clock), event_ts, model (ranker version or "none")."""
        return f"{self.prefix}recsmeta:{user_id}"

    def neighbours(self, item_id: str) -> str:
        """Sorted set: member = similar item id, score = similarity; top neighbour_cap."""
        return f"{self.prefix}nbrs:{item_id}"

    def item(self, item_id: str) -> str:
        """Hash: title, year, genres (space-separated) — item metadata when known."""
        return f"{self.prefix}item:{item_id}"

    def item_sentiment(self, item_id: str) -> str:
        """Hash of an item's review sentiment (P(positive) per review): ``count``, ``sum``
        (mean = sum / count) and ``decayed_sum``, ``decayed_weight`` (recent = their ratio,
        reviews weighted by time decay)."""
        return f"{self.prefix}sentiment:{item_id}"

    def summary(self, item_id: str) -> str:
        """String, JSON: an item's review summary (`models.summary`): ``count``, ``mean``,
        ``positive_share``, ``disagree``, ``sentences`` ([{"text", "side" "+"|"-", "p"}]) and
        ``phrases``; ``state`` is the incremental state behind them (bounded, internal)."""
        return f"{self.prefix}summary:{item_id}"

    @property
    def trending(self) -> str:
        """Sorted set: member = item id, score = popularity with time decay."""
        return f"{self.prefix}trending"

    # --- the ranker's model store (streams.runtime.model_store) ----------------------------------
    def ranker_artefact(self, version: int) -> str:
        """String: an immutable safetensors artefact of one published ranker version."""
        return f"{self.prefix}ranker:artefact:{version}"

    @property
    def ranker_current(self) -> str:
        """String: the version workers serve (absent: rank by co-occurrence alone)."""
        return f"{self.prefix}ranker:current"

    @property
    def ranker_versions(self) -> str:
        """Sorted set: member = published version, score = publish time (epoch s)."""
        return f"{self.prefix}ranker:versions"

    @property
    def ranker_next_version(self) -> str:
        return f"{self.prefix}ranker:next_version"

    @property
    def trainer_log(self) -> str:
        """Stream: what the trainer did, an entry per fit attempt (``kind`` "attempt":
        ``fitting`` 1 or 0, ``read`` example records read by then) and per guard decision
        (``kind`` "decision": ``published`` 1 or 0, ``candidate_ndcg``, ``current_ndcg``,
        ``against``, ``holdout_groups``, and ``error`` when the guard passed a ranker that could
        not be published: its artefact over the size limit); the newest ~1,000 kept."""
        return f"{self.prefix}ranker:trainer-log"

    @property
    def ranker_serving(self) -> str:
        """Hash: worker id -> JSON {"version", "since"}: what each worker serves now."""
        return f"{self.prefix}ranker:serving"

    # --- internal state: written atomically with the offsets it reflects -------------------------
    def history(self, user_id: str) -> str:
        return f"{self.prefix}hist:{user_id}"

    @property
    def offsets(self) -> str:
        """Hash: "topic:partition" -> next offset to process."""
        return f"{self.prefix}offsets"

    @property
    def owners(self) -> str:
        """Hash: "topic:partition" -> the worker that owns it now. A worker claims its
        partitions when they are assigned, and commits only while it is their owner: a zombie
        that lost them cannot commit (`streams.runtime.state.Fenced`)."""
        return f"{self.prefix}owners"

    @property
    def deltas(self) -> str:
        """Stream of committed co-occurrence increments, followed by every worker."""
        return f"{self.prefix}deltas"

    @property
    def snapshot(self) -> str:
        return f"{self.prefix}snapshot"

    @property
    def settled(self) -> str:
        """Hash: "topic:partition" -> the deltas id its users' recommendations were settled at."""
        return f"{self.prefix}settled"

    def sentiment_model(self, topic: str, partition: int) -> str:
        """npz snapshot (no pickle) of a review partition's sentiment model; its header holds
        the offset it reflects."""
        return f"{self.prefix}sentiment_model:{topic}:{partition}"

    @property
    def erased(self) -> str:
        """Hash: user id -> erased_at (epoch s). The user's events at or before it are ignored,
        so a replay cannot bring an erased user back (`streams.runtime.erasure`)."""
        return f"{self.prefix}erased"

    def active(self, topic: str, partition: int) -> str:
        """Sorted set: user -> when (epoch s, wall clock) a batch last wrote their state from
        an event of this source partition. The settle pass re-ranks the users within
        ``SETTLE_WINDOW_S`` and removes the older ones."""
        return f"{self.prefix}active:{topic}:{partition}"

    def users(self, topic: str, partition: int) -> str:
        """Set of every user seen on a source partition, written before issue 19 (never
        pruned; no longer written or read, only cleaned by erasure)."""
        return f"{self.prefix}users:{topic}:{partition}"
