"""Workers under least privilege: a Redis ACL user confined to its key prefix and commands,
Kafka over SASL/PLAIN, TLS with client certificates and SASL_SSL/SCRAM-SHA-512, Redis over
TLS."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from streams.connections import (
    CredentialsRejected,
    acl_rules,
    check_kafka_credentials,
    known_commands,
    redis_async,
    redis_sync,
)
from streams.contract.keys import Keys
from streams.contract.topics import ensure_topics
from streams.runtime.erasure import erase_user
from streams.settings import KafkaSecurityProtocol, Settings, load_settings
from streams.tools.stack import LocalStack, StackError, free_port, run_coroutine, write_certificates
from tests.conftest import isolated_settings
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


# --- Kafka over SASL/PLAIN, TLS and SASL_SSL/SCRAM: a private local stack ------------------------
@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack of our own (own ports and directory) with SASL_PLAINTEXT (PLAIN), SSL (client
    certificates) and SASL_SSL (SCRAM-SHA-512) listeners: the session's shared services are
    never restarted or reconfigured."""
    from tests.integration.test_stack import _require_local_stack

    _require_local_stack()
    stack = LocalStack(load_settings(
        stack_dir=tmp_path_factory.mktemp("secure-stack"), kafka_port=free_port(),
        kafka_controller_port=free_port(), kafka_sasl_port=free_port(),
        kafka_ssl_port=free_port(), kafka_sasl_ssl_port=free_port(), redis_port=free_port(),
        stack_sasl_password=secrets.token_urlsafe(18)))
    try:
        stack.up()
        yield stack
    finally:
        stack.down(wipe=True)


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SSL", "SASL_SSL"])
def test_a_worker_processes_events_over_each_secure_listener(
        secure_stack: LocalStack, protocol: KafkaSecurityProtocol, tmp_path: Path) -> None:
    settings = isolated_settings(secure_stack.listener_client_settings(protocol))
    assert settings.kafka_security_protocol == protocol
    if protocol == "SASL_SSL":
        assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    run_coroutine(ensure_topics(settings))  # the admin client authenticates too
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        sent = asyncio.run(send_raw(settings, [m for m in events(settings, 300)
                                               if not m[0].startswith(settings.topic_reviews)]))
        worker.wait_ready(timeout=120)
        wait_processed(settings, sent, [worker])
        wait_settled(settings)
        assert client(settings).zcard(Keys(settings.key_prefix).recs("u1")) > 0
    finally:
        worker.stop()


def _exits_at_start_naming(settings: Settings, tmp_path: Path, *texts: str) -> None:
    """A worker with these settings stops by itself, soon, saying ``texts``."""
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        deadline = time.monotonic() + 90  # bounded: a worker must not wait forever
        while worker.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not worker.alive(), f"the worker kept running:\n{worker.tail()}"
        assert worker.proc is not None and worker.proc.returncode != 0
        for text in texts:
            assert text in worker.tail()
    finally:
        worker.stop()


def _refused(good: Settings, tmp_path: Path, changes: list[dict], match: str,
             *texts: str) -> None:
    """The right settings pass the start-up check; each of ``changes`` to them is refused by
    it (``match``), and a worker with the last one stops at start saying ``texts``."""
    asyncio.run(asyncio.wait_for(check_kafka_credentials(good), 60))
    for change in changes:
        bad = load_settings(**{**good.model_dump(), **change})
        with pytest.raises(CredentialsRejected, match=match):
            asyncio.run(asyncio.wait_for(check_kafka_credentials(bad), 60))
    _exits_at_start_naming(bad, tmp_path, *texts)


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_a_wrong_sasl_password_fails_at_start_naming_the_setting(
        secure_stack: LocalStack, protocol: KafkaSecurityProtocol, tmp_path: Path) -> None:
    good = isolated_settings(secure_stack.listener_client_settings(protocol))
    _refused(good, tmp_path, [{"kafka_password": "not-the-password"}],
             "TASTEMAKER_KAFKA_PASSWORD",
             f"rejected {good.kafka_sasl_mechanism} authentication", "TASTEMAKER_KAFKA_PASSWORD")


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_an_unverifiable_broker_certificate_fails_at_start_naming_the_setting(
        secure_stack: LocalStack, protocol: KafkaSecurityProtocol, tmp_path: Path) -> None:
    """Without the stack's CA (the system CAs, or a CA that did not sign the broker's
    certificate) the broker is not trusted."""
    good = isolated_settings(secure_stack.listener_client_settings(protocol))
    stranger = write_certificates(tmp_path / "stranger")["ca.crt"]
    _refused(good, tmp_path, [{"kafka_ssl_cafile": None}, {"kafka_ssl_cafile": stranger}],
             "cannot verify.*TASTEMAKER_KAFKA_SSL_CAFILE", "cannot verify",
             "TASTEMAKER_KAFKA_SSL_CAFILE")


def test_a_client_certificate_the_broker_refuses_fails_at_start_naming_the_setting(
        secure_stack: LocalStack, tmp_path: Path) -> None:
    """The SSL listener asks for a client certificate signed by the stack's CA: none, or one
    signed by another CA, is refused."""
    good = isolated_settings(secure_stack.listener_client_settings("SSL"))
    other = write_certificates(tmp_path / "stranger")
    _refused(good, tmp_path, [
        {"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None},
        {"kafka_ssl_certfile": other["client.crt"], "kafka_ssl_keyfile": other["client.key"]}],
        "refused this client's TLS certificate.*KAFKA_SSL_CERTFILE",
        "refused this client's TLS certificate", "TASTEMAKER_KAFKA_SSL_CERTFILE")


def test_a_sasl_ssl_listener_over_storage_formatted_without_its_user_is_refused(
        secure_stack: LocalStack) -> None:
    """SCRAM users are made when the storage is formatted: a changed password cannot take
    effect silently (the broker would refuse every client), so the stack says what to do."""
    other = LocalStack(load_settings(**{**secure_stack.settings.model_dump(),
                                        "stack_sasl_password": "another-password"}))
    with pytest.raises(StackError, match="down --wipe"):
        other.kafka.check_scram_user()


# --- Redis over TLS: a private redis-server with generated certificates ---------------------------
@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, dict[str, Path]]]:
    from tests.conftest import services_unavailable

    if shutil.which("openssl") is None or shutil.which("redis-server") is None:
        services_unavailable("the Redis TLS test needs openssl and redis-server on PATH")
    certs = write_certificates(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(certs["server.crt"]), "--tls-key-file", str(certs["server.key"]),
         "--tls-ca-cert-file", str(certs["ca.crt"]), "--tls-auth-clients", "yes",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            if proc.poll() is not None:
                services_unavailable(f"redis-server without TLS support? "
                                     f"{proc.stdout.read().decode(errors='replace')[-500:]}")
            assert time.monotonic() < deadline, "TLS redis-server did not listen in 30 s"
            time.sleep(0.1)
        yield port, certs
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_redis_over_tls_with_a_client_certificate(tls_redis: tuple[int, dict[str, Path]]
                                                  ) -> None:
    port, certs = tls_redis
    url = f"rediss://127.0.0.1:{port}/0"
    settings = load_settings(redis_url=url, redis_tls_ca_file=certs["ca.crt"],
                             redis_tls_cert_file=certs["client.crt"],
                             redis_tls_key_file=certs["client.key"])
    with redis_sync(settings) as r:
        r.set("tls-probe", "ok")
        assert r.get("tls-probe") == b"ok"

    async def read_async() -> bytes | None:
        r = redis_async(settings)
        try:
            return await r.get("tls-probe")
        finally:
            await r.aclose()

    assert asyncio.run(read_async()) == b"ok"

    # the server is verified against the CA: without it, the system CAs reject it
    unverified = load_settings(redis_url=url, redis_tls_cert_file=certs["client.crt"],
                               redis_tls_key_file=certs["client.key"])
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        redis_sync(unverified, socket_timeout=5).ping()
    # and the server asks for a client certificate
    anonymous = load_settings(redis_url=url, redis_tls_ca_file=certs["ca.crt"])
    with pytest.raises(redis.ConnectionError):
        redis_sync(anonymous, socket_timeout=5).ping()


# --- artefacts: nothing is unpickled, and sizes are checked before a blob is read ---------------
def test_snapshots_over_the_size_limit_are_refused_before_reading(unique_topics: Settings
                                                                  ) -> None:
    from models.cooccurrence import ItemCooccurrence
    from streams.runtime.sentiment import ReviewSentiments
    from streams.runtime.state import RedisState, SnapshotTooLarge

    settings = load_settings(**{**unique_topics.model_dump(), "max_snapshot_bytes": 1000})
    keys = Keys(settings.key_prefix)
    admin = client(settings)
    admin.hset(keys.snapshot, mapping={"delta_id": "0-1", "items": b"x" * 1001})
    admin.set(keys.sentiment_model(settings.topic_reviews, 0), b"{" * 1001)

    async def load() -> None:
        r = redis_async(settings)
        try:
            state = RedisState(r, keys, ItemCooccurrence(),
                               max_snapshot_bytes=settings.max_snapshot_bytes)
            with pytest.raises(SnapshotTooLarge, match="TASTEMAKER_MAX_SNAPSHOT_BYTES"):
                await state.load_snapshot()
            with pytest.raises(SnapshotTooLarge, match="TASTEMAKER_MAX_SNAPSHOT_BYTES"):
                await ReviewSentiments(settings, keys).ensure(r, 0, 0)
        finally:
            await r.aclose()

    asyncio.run(load())
