"""docker/compose.yml agrees with the settings and with the local stack's broker config.

With a working ``docker compose`` the file is also validated by ``docker compose config``; without
one (CI machines here have no Docker) the structure checks below still run.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.contract.topics import DLQ_PARTITIONS, MODEL_UPDATES_PARTITIONS
from streams.settings import ENV_PREFIX, Settings
from streams.tools.stack import SINGLE_NODE_BROKER, docker_env

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yml"
TOPIC_FIELDS = ("topic_plays", "topic_ratings", "topic_reviews", "topic_dlq", "topic_model_updates")


def _default(field: str) -> Any:
    return Settings.model_fields[field].default


def _env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):  # the "KEY=value" form
        environment = dict(item.partition("=")[::2] for item in environment)
    return {key: str(value) for key, value in environment.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _docker_compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return result.returncode == 0


SERVICE_KEYS = {
    "image", "build", "command", "environment", "ports", "volumes", "healthcheck",
    "depends_on", "restart", "profiles",
}  # fmt: skip


def test_compose_file_is_valid(compose: dict[str, Any]) -> None:
    """``docker compose config`` where it runs; otherwise only known keys, no typos."""
    if _docker_compose_works():
        result = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    top = {key for key in compose if not key.startswith("x-")}
    assert top <= {"name", "services", "volumes", "networks"}, top
    for name, service in compose["services"].items():
        assert set(service) <= SERVICE_KEYS, (name, set(service) - SERVICE_KEYS)
        assert ("image" in service) or ("build" in service), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in compose["volumes"], (name, source)


def test_default_services_and_the_trainer_profile(services: dict[str, dict[str, Any]]) -> None:
    assert {"kafka", "redis", "worker", "topics", "trainer"} <= set(services)
    for name in ("kafka", "redis", "worker", "topics"):
        assert "profiles" not in services[name], f"{name} must start by default"
    assert services["trainer"]["profiles"] == ["trainer"]
    for name, command in (("worker", "worker"), ("trainer", "trainer"), ("topics", "topics")):
        assert services[name]["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert services[name]["command"] == [command]
    assert (ROOT / "docker" / "Dockerfile").read_text().count('ENTRYPOINT ["tastemaker"]') == 1
    assert services["worker"]["depends_on"]["topics"]["condition"] == (
        "service_completed_successfully"
    )


def test_every_tastemaker_variable_is_a_setting(services: dict[str, dict[str, Any]]) -> None:
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    used = {key for service in services.values() for key in _env(service)}
    ours = {key for key in used if key.startswith(ENV_PREFIX)}
    assert ours, "compose sets no TASTEMAKER_* variables"
    assert ours <= fields, f"not settings: {sorted(ours - fields)}"


def test_topics_and_partitions_match_the_settings(services: dict[str, dict[str, Any]]) -> None:
    for name in ("topics", "worker", "trainer"):
        env = _env(services[name])
        for field in TOPIC_FIELDS:
            assert env[f"{ENV_PREFIX}{field.upper()}"] == _default(field), (name, field)
        assert env[f"{ENV_PREFIX}TOPIC_PARTITIONS"] == str(_default("topic_partitions"))
    assert _env(services["kafka"])["KAFKA_NUM_PARTITIONS"] == str(_default("topic_partitions"))
    assert DLQ_PARTITIONS == MODEL_UPDATES_PARTITIONS == 1


def test_broker_matches_the_local_stack(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == f"apache/kafka:{_default('kafka_version')}"
    env = _env(kafka)
    for key, value in docker_env(SINGLE_NODE_BROKER).items():
        assert env.get(key) == value, key
    assert "broker" in env["KAFKA_PROCESS_ROLES"] and "controller" in env["KAFKA_PROCESS_ROLES"]
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    assert not env["CLUSTER_ID"].startswith("-")
    # Host clients use the settings' default bootstrap address; containers the internal listener.
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert f"//{_default('kafka_bootstrap_servers')}" in advertised
    for name in ("topics", "worker", "trainer"):
        bootstrap = _env(services[name])[f"{ENV_PREFIX}KAFKA_BOOTSTRAP_SERVERS"]
        assert f"//{bootstrap}" in advertised, name


def test_redis_has_aof_and_the_clients_reach_it(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert redis["image"] == "redis:7"
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    port = _default("redis_url").rsplit(":", 1)[1].split("/")[0]
    assert f"{port}:6379" in redis["ports"][0]
    for name in ("worker", "trainer"):
        assert _env(services[name])[f"{ENV_PREFIX}REDIS_URL"].startswith("redis://redis:6379/")
