"""Workers under least privilege: a Redis ACL user confined to its key prefix and commands,
Kafka over SASL/PLAIN, Redis over TLS."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from pathlib import Path

import orjson
import pytest
import redis

from streams.connections import acl_rules, known_commands, redis_sync
from streams.erasure import erase_user
from streams.keys import Keys
from streams.settings import Settings, load_settings
from tests.integration.harness import (
    WorkerProcess,
    client,
    send_raw,
    wait_processed,
    wait_settled,
)

pytestmark = pytest.mark.integration


def events(settings: Settings, n: int) -> list[tuple[str, bytes, bytes]]:
    """Plays, ratings and reviews of 20 users (every code path of a batch: sentiment too)."""
    out = []
    for k in range(n):
        user, item, ts = f"u{k % 20}", f"i{(k * 7) % 60}", 1e9 + k
        kind = k % 3
        if kind == 0:
            topic, value = settings.topic_plays, {"user_id": user, "item_id": item, "ts": ts}
        elif kind == 1:
            topic, value = settings.topic_ratings, {"user_id": user, "item_id": item, "ts": ts,
                                                    "rating": 1 + k % 5}
        else:
            topic, value = settings.topic_reviews, {
                "user_id": user, "item_id": item, "ts": ts, "rating": 1 + k % 5,
                "text": "loved it" if k % 5 > 2 else "dull and too long"}
        out.append((topic, user.encode(), orjson.dumps(value)))
    return out


def acl_log(admin: redis.Redis, username: str) -> list[dict]:
    return [e for e in admin.acl_log(count=1000)
            if (e.get("username") or b"") in (username, username.encode())]


def test_a_worker_runs_as_an_acl_user_confined_to_its_prefix(unique_topics: Settings,
                                                             tmp_path: Path) -> None:
    admin = client(unique_topics)
    username = f"tastemaker-test-{uuid.uuid4().hex[:12]}"
    password = secrets.token_urlsafe(24)
    commands = known_commands(admin)
    admin.execute_command("ACL", "SETUSER", username, "reset", "on", f">{password}",
                          *acl_rules(unique_topics.key_prefix, commands))
    # snapshots every batch: the snapshot reads and writes run too
    settings = load_settings(**{**unique_topics.model_dump(), "redis_username": username,
                                "redis_password": password, "snapshot_every_batches": 1})
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        sent = asyncio.run(send_raw(settings, events(settings, 600)))
        worker.wait_ready()
        wait_processed(settings, sent, [worker])
        wait_settled(settings)
        # a second worker life: it loads the snapshots the first one wrote
        worker.stop()
        worker = WorkerProcess(settings, tmp_path / "worker-2.log").start()
        more = asyncio.run(send_raw(settings, events(settings, 90)))
        worker.wait_ready()
        wait_processed(settings, sent + more, [worker])
        wait_settled(settings)
        asyncio.run(erase_user(settings, "u3"))
        wait_settled(settings)

        keys = Keys(settings.key_prefix)
        assert admin.zcard(keys.recs("u1")) > 0 and admin.exists(keys.explain("u1"))
        assert admin.exists(keys.sentiment_model(settings.topic_reviews, 0)) or any(
            admin.exists(keys.sentiment_model(settings.topic_reviews, p))
            for p in range(settings.topic_partitions))
        assert "snapshot loaded" in worker.log_path.read_text()
        assert not admin.exists(keys.history("u3"))
        # every key the worker wrote carries the prefix: the ACL would have refused any other,
        # and Redis refused nothing
        assert acl_log(admin, username) == [], acl_log(admin, username)

        confined = redis_sync(settings)
        with pytest.raises(redis.exceptions.NoPermissionError):
            confined.get(f"not-{settings.key_prefix}x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            confined.flushall()
        with pytest.raises(redis.exceptions.NoPermissionError):
            confined.config_get("*")
        confined.close()
        refused = acl_log(admin, username)
        assert {e["reason"] for e in refused} >= {"key", "command"}
    finally:
        worker.stop()
        admin.execute_command("ACL", "DELUSER", username)
