"""Shared fixtures: a real Kafka broker and a real Redis server for integration tests.

The services come from the first of these that works, once per session:

1. ``TASTEMAKER_KAFKA_BOOTSTRAP_SERVERS`` and ``TASTEMAKER_REDIS_URL`` from the environment (what
   ``eval "$(tastemaker up)"`` and ``.ci/run`` set), checked to answer;
2. test containers (``apache/kafka``, ``redis:7``) when a Docker engine answers;
3. the local stack (`streams.tools.stack`), started here and stopped at the end of the session if
   this session started it.

When none works the integration tests skip with the reason, or fail under ``CI=true``: CI must
never go green by skipping them. Each integration test should take `unique_topics`, settings with
its own topic names, key prefix and app id, so tests don't see each other's events or keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from streams.settings import ENV_PREFIX, Settings, SettingsError, load_settings
from streams.tools.namespaces import drop_namespaces, namespaced
from streams.tools.stack import free_port

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
SERVICE_WAIT_S = 120


@dataclass
class Services:
    kafka_bootstrap: str
    redis_url: str
    source: str
    teardown: list[Any] = field(default_factory=list)


def services_unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI=true, a test that needs services we could not get."""
    if CI:
        pytest.fail(f"integration services unavailable (CI=true, so not skipping): {reason}")
    pytest.skip(f"integration services unavailable: {reason}")


def kafka_answers(bootstrap_servers: str) -> bool:
    from streams.tools.stack import kafka_answers as probe
    from streams.tools.stack import run_coroutine

    return run_coroutine(probe(load_settings(kafka_bootstrap_servers=bootstrap_servers)))


def redis_answers(url: str) -> bool:
    import redis

    from streams.connections import redis_sync

    client = redis_sync(load_settings(redis_url=url), socket_timeout=3, socket_connect_timeout=3)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _from_env() -> Services | None:
    kafka = os.environ.get(f"{ENV_PREFIX}KAFKA_BOOTSTRAP_SERVERS")
    redis_url = os.environ.get(f"{ENV_PREFIX}REDIS_URL")
    if not kafka and not redis_url:
        return None
    if not (kafka and redis_url):
        services_unavailable(
            f"set both {ENV_PREFIX}KAFKA_BOOTSTRAP_SERVERS and {ENV_PREFIX}REDIS_URL, or neither"
        )
    if not kafka_answers(kafka):
        services_unavailable(f"{ENV_PREFIX}KAFKA_BOOTSTRAP_SERVERS={kafka} does not answer")
    if not redis_answers(redis_url):
        services_unavailable(f"{ENV_PREFIX}REDIS_URL={redis_url} does not answer")
    return Services(kafka, redis_url, "environment")


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no client library, no socket, no daemon: all mean "no Docker"
        return False


def _from_containers(settings: Settings) -> Services:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    from streams.tools.stack import SINGLE_NODE_BROKER, docker_env

    services = Services("", "", "test containers")
    try:
        redis = (
            DockerContainer("redis:7")
            .with_command("redis-server --appendonly yes --appendfsync everysec")
            .with_exposed_ports(6379)
            .waiting_for(
                LogMessageWaitStrategy("Ready to accept connections").with_startup_timeout(
                    SERVICE_WAIT_S
                )
            )
        )
        services.teardown.append(redis.stop)
        redis.start()
        host = redis.get_container_host_ip()
        services.redis_url = f"redis://{host}:{redis.get_exposed_port(6379)}/0"

        # The broker advertises the address clients use, so the host port is fixed up front.
        port = free_port()
        kafka = (
            DockerContainer(f"apache/kafka:{settings.kafka_version}")
            .with_bind_ports(port, port)
            .with_envs(
                KAFKA_NODE_ID="1",
                KAFKA_PROCESS_ROLES="broker,controller",
                KAFKA_LISTENERS=f"PLAINTEXT://:{port},CONTROLLER://:9093",
                KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{host}:{port}",
                KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
                KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
                KAFKA_NUM_PARTITIONS=str(settings.topic_partitions),
                KAFKA_HEAP_OPTS="-Xmx512m -Xms256m",
                **docker_env(SINGLE_NODE_BROKER),
            )
            .waiting_for(
                LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(SERVICE_WAIT_S)
            )
        )
        services.teardown.append(kafka.stop)
        kafka.start()
        services.kafka_bootstrap = f"{host}:{port}"
    except Exception as exc:
        _teardown(services)
        services_unavailable(f"Docker answers but the test containers did not start: {exc!r}")
    return services


def _from_local_stack(settings: Settings, rootdir: Path) -> Services:
    from streams.tools.stack import LocalStack, StackError

    if not settings.stack_dir.is_absolute():  # the repo's .tastemaker/, wherever pytest runs
        settings = load_settings(
            **{**settings.model_dump(), "stack_dir": rootdir / settings.stack_dir}
        )
    stack = LocalStack(settings)
    try:
        changes = stack.up()
    except StackError as exc:
        services_unavailable(f"no environment settings, no Docker, local stack failed: {exc}")
    services = Services(stack.kafka_bootstrap_servers, stack.redis_url, "local stack")
    # Stop only what this session started: a stack the developer brought up stays up.
    for change in changes:
        if change.outcome == "started":
            stop = stack.service(change.name).stop
            services.teardown.append(stop)
    return services


def _teardown(services: Services) -> None:
    for stop in reversed(services.teardown):
        with suppress(Exception):
            stop()


@pytest.fixture(scope="session")
def _services(request: pytest.FixtureRequest) -> Iterator[Services]:
    try:
        base = load_settings()
    except SettingsError as exc:
        services_unavailable(str(exc))
    services = _from_env()
    if services is None:
        if _docker_answers():
            services = _from_containers(base)
        else:
            services = _from_local_stack(base, request.config.rootpath)
    try:
        yield services
    finally:
        _teardown(services)


@pytest.fixture(scope="session")
def kafka_bootstrap(_services: Services) -> str:
    """``host:port`` of a Kafka broker that answers."""
    return _services.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(_services: Services) -> str:
    """URL of a Redis server that answers."""
    return _services.redis_url


@pytest.fixture(scope="session")
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    """Settings from the environment, pointed at the session's Kafka and Redis."""
    return load_settings(kafka_bootstrap_servers=kafka_bootstrap, redis_url=redis_url)


def isolated_settings(base: Settings, tag: str | None = None) -> Settings:
    """``base`` with topic names, key prefix, app id and web port of its own.

    >>> s = isolated_settings(load_settings(topic_plays="plays", topic_dlq="events-dlq"), tag="abc")
    >>> s.topic_plays, s.topic_dlq, s.key_prefix, s.app_id
    ('test-plays-abc', 'test-events-dlq-abc', 'test-abc:', 'tastemaker-test-abc')
    """
    return namespaced(base, "test", tag, web_port=free_port())


@pytest.fixture
def unique_topics(settings: Settings) -> Iterator[Settings]:
    """Settings of the session's services with this test's own topics (created, and deleted
    afterwards with any ``<app_id>-*`` topics Faust made) and its own Redis key prefix (keys
    deleted afterwards)."""
    from streams.contract.topics import ensure_topics
    from streams.tools.stack import run_coroutine

    isolated = isolated_settings(settings)
    run_coroutine(ensure_topics(isolated))
    yield isolated
    with suppress(Exception):
        run_coroutine(drop_namespaces([isolated]))


