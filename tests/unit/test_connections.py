"""Every client's security options come from the settings; bad combinations fail at start."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import faust
import pytest

from streams.connections import (
    acl_rules,
    faust_credentials,
    kafka_auth,
    kafka_producer,
    redis_options,
    redis_sync,
)
from streams.settings import SettingsError, load_settings
from streams.tools.supervisor import settings_env


def test_plaintext_by_default() -> None:
    settings = load_settings()
    assert kafka_auth(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None
    assert redis_options(settings) == {}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_reaches_aiokafka_and_faust(mechanism: str) -> None:
    settings = load_settings(kafka_security_protocol="SASL_PLAINTEXT",
                             kafka_sasl_mechanism=mechanism, kafka_username="app",
                             kafka_password="pw")
    assert kafka_auth(settings) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
        "sasl_plain_username": "app", "sasl_plain_password": "pw"}
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("app", "pw")
    assert credentials.mechanism.value == mechanism
    assert credentials.protocol.value == "SASL_PLAINTEXT"

    async def build() -> str:  # aiokafka accepts the options as built (no connection made)
        return kafka_producer(settings).client._sasl_mechanism

    assert asyncio.run(build()) == mechanism


def test_sasl_ssl_and_ssl_carry_a_tls_context() -> None:
    sasl_ssl = load_settings(kafka_security_protocol="SASL_SSL", kafka_username="app",
                             kafka_password="pw")
    assert isinstance(kafka_auth(sasl_ssl)["ssl_context"], ssl.SSLContext)
    assert faust_credentials(sasl_ssl).protocol.value == "SASL_SSL"
    tls = faust_credentials(load_settings(kafka_security_protocol="SSL"))
    assert isinstance(tls, faust.SSLCredentials) and isinstance(tls.context, ssl.SSLContext)


def test_redis_user_password_and_tls_files(tmp_path: Path) -> None:
    for name in ("ca.crt", "c.crt", "c.key"):
        (tmp_path / name).write_text("-")
    settings = load_settings(redis_url="rediss://cache:6380/0", redis_username="worker",
                             redis_password="pw", redis_tls_ca_file=tmp_path / "ca.crt",
                             redis_tls_cert_file=tmp_path / "c.crt",
                             redis_tls_key_file=tmp_path / "c.key")
    assert redis_options(settings) == {
        "username": "worker", "password": "pw", "ssl_ca_certs": str(tmp_path / "ca.crt"),
        "ssl_certfile": str(tmp_path / "c.crt"), "ssl_keyfile": str(tmp_path / "c.key")}
    kwargs = redis_sync(settings).connection_pool.connection_kwargs
    assert kwargs["username"] == "worker" and kwargs["ssl_ca_certs"].endswith("ca.crt")


@pytest.mark.parametrize(("overrides", "named"), [
    ({"kafka_security_protocol": "SASL_SSL"}, "TASTEMAKER_KAFKA_USERNAME"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_username": "u"},
     "TASTEMAKER_KAFKA_PASSWORD"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/no/such/ca.pem"},
     "TASTEMAKER_KAFKA_SSL_CAFILE"),
    ({"redis_url": "rediss://h:1/0", "redis_tls_ca_file": "/no/such/ca.pem"},
     "TASTEMAKER_REDIS_TLS_CA_FILE"),
    ({"redis_tls_ca_file": "/etc/hostname"}, "TASTEMAKER_REDIS_TLS_CA_FILE"),  # not rediss://
    ({"redis_password": "pw"}, "TASTEMAKER_REDIS_USERNAME"),
    ({"kafka_sasl_mechanism": "GSSAPI"}, "TASTEMAKER_KAFKA_SASL_MECHANISM"),
    ({"stack_sasl_password": 'a"b'}, "TASTEMAKER_STACK_SASL_PASSWORD"),
    # a comma would end Kafka's --add-scram credential spec early (no quoting there)
    ({"stack_sasl_password": "a,b"}, "TASTEMAKER_STACK_SASL_PASSWORD"),
])
def test_bad_security_settings_fail_at_start_naming_the_setting(overrides: dict,
                                                                named: str) -> None:
    with pytest.raises(SettingsError, match=named) as info:
        load_settings(**overrides)
    assert "pw" not in str(info.value).replace(named, "")  # secrets are never echoed


def test_child_processes_get_the_secrets_and_no_none_texts() -> None:
    settings = load_settings(redis_username="w", redis_password="s3cret")
    env = settings_env(settings)
    assert env["TASTEMAKER_REDIS_PASSWORD"] == "s3cret"
    assert "TASTEMAKER_REDIS_TLS_CA_FILE" not in env
    assert load_settings(**{k: v for k, v in settings.model_dump().items()}).redis_password


def test_acl_rules_confine_keys_and_commands() -> None:
    rules = acl_rules("tm:")
    assert rules[:4] == ["resetkeys", "~tm:*", "resetchannels", "-@all"]
    assert "+flushall" not in rules and "+config" not in rules and "+exec" in rules


def test_the_documented_acl_line_is_the_worker_command_list() -> None:
    from streams.connections import WORKER_REDIS_COMMANDS

    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert " ".join(f"+{c}" for c in WORKER_REDIS_COMMANDS) in docs


def test_every_redis_client_parses_replies_with_hiredis() -> None:
    """``redis[hiredis]`` is a dependency: redis-py's C parser, not its pure-Python one, reads
    every reply (a top-100 read spent most of its time in the Python parser)."""
    import redis.asyncio.connection
    import redis.connection
    import redis.utils
    from redis._parsers import _AsyncHiredisParser, _HiredisParser

    from streams.connections import redis_async

    assert redis.utils.HIREDIS_AVAILABLE
    for url in ("redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6380/0"):
        settings = load_settings(redis_url=url)
        blocking = redis_sync(settings).connection_pool.make_connection()  # no connect yet
        assert isinstance(blocking._parser, _HiredisParser)
        assert isinstance(blocking._command_packer, redis.connection.HiredisRespSerializer)
        pool = redis_async(settings).connection_pool
        assert isinstance(pool.make_connection()._parser, _AsyncHiredisParser)


@pytest.mark.parametrize("args", [
    ("ZADD", "recs:u1", 0.1 + 0.2, "item", 1e-300, "é", -7, "x" * 100_000),
    ("HSET", b"explain:u1", b"i1", b'{"because": []}', memoryview(b"mv"), bytearray(b"ba")),
    ("CLIENT SETINFO", "LIB-NAME", "redis-py"), (b"CLIENT SETINFO", b"LIB-VER", b"8"),
    ("ZADD", "k", float("inf"), "a", float("-inf"), "b", 2**70, "c"),
])
def test_hiredis_packing_writes_the_bytes_redis_py_writes(args: tuple) -> None:
    from redis.asyncio.connection import Connection

    from streams.connections import hiredis_packing

    ours = b"".join(hiredis_packing(Connection)().pack_command(*args))
    theirs = b"".join(bytes(c) for c in Connection().pack_command(*args))
    assert ours == theirs


def test_hiredis_packing_refuses_what_redis_py_refuses_and_every_url_gets_it() -> None:
    from redis.asyncio.connection import Connection, SSLConnection
    from redis.exceptions import DataError

    from streams.connections import hiredis_packing, redis_async

    for bad in (None, True, object()):
        with pytest.raises(DataError):
            hiredis_packing(Connection)().pack_command("SET", "k", bad)
    for url, base in (("redis://h:1/0", Connection), ("rediss://h:1/0", SSLConnection)):
        pool = redis_async(load_settings(redis_url=url)).connection_pool
        assert issubclass(pool.connection_class, base) and pool.connection_class.packs_with_hiredis
