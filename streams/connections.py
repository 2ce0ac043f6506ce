"""Every client of Kafka and Redis, built from the settings in one place.

Nothing else in tastemaker constructs a Redis or Kafka client, so authentication and TLS are
configured once: Redis ACL user and password, TLS with ``rediss://`` and the ``REDIS_TLS_*``
files; Kafka ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL`` with PLAIN or SCRAM, the
``KAFKA_SSL_*`` files; Faust gets the same as ``broker_credentials``.

>>> from streams.settings import load_settings
>>> kafka_auth(load_settings(kafka_security_protocol="SASL_PLAINTEXT",
...                          kafka_username="app", kafka_password="s3cret"))["sasl_mechanism"]
'PLAIN'

The Redis commands a worker sends (for an ACL user, see `WORKER_REDIS_COMMANDS` and
docs/operations.md, "Security"): the integration test runs a worker as a user allowed exactly
these commands on its key prefix only, and checks that Redis refused none of them (``ACL LOG``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from streams.settings import ENV_PREFIX, Settings

if TYPE_CHECKING:
    import faust
    import redis
    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

logger = logging.getLogger(__name__)

#: What a worker (and ``tastemaker erase-user``) sends to Redis: connection housekeeping,
#: per-batch reads and the MULTI/EXEC commit, the deltas stream, snapshots, recommendations.
WORKER_REDIS_COMMANDS: tuple[str, ...] = (
    "ping", "client|setinfo",  # health checks; redis-py names itself on connect
    "watch", "unwatch", "multi", "exec", "discard",  # the guarded commits
    "get", "mget", "set", "del", "strlen",  # histories, sentiment model snapshots
    "hget", "hmget", "hset", "hdel", "hgetall", "hincrbyfloat", "hstrlen",  # offsets, snapshot
    "zadd", "zrange", "zremrangebyscore", "zrem",  # lists; a partition's active users
    "srem",  # erasure: the users sets of earlier versions
    "pexpire",  # RECS_TTL_S
    "xadd", "xread", "xrange", "xrevrange", "xtrim",  # the deltas stream
)


def acl_rules(prefix: str, commands: tuple[str, ...] = WORKER_REDIS_COMMANDS) -> list[str]:
    """``ACL SETUSER`` rules for a worker confined to the keys under ``prefix``.

    >>> " ".join(acl_rules("tm:", ("get", "set")))
    'resetkeys ~tm:* resetchannels -@all +get +set'
    """
    return ["resetkeys", f"~{prefix}*", "resetchannels", "-@all", *(f"+{c}" for c in commands)]


def known_commands(client: redis.Redis, commands: tuple[str, ...] = WORKER_REDIS_COMMANDS
                   ) -> tuple[str, ...]:
    """The ``commands`` this server has (``client|setinfo`` came with Redis 7.2: an ACL rule
    naming a command the server lacks is an error)."""
    replies = client.execute_command("COMMAND INFO", *commands)  # one word: no reply parsing
    return tuple(c for c, reply in zip(commands, replies, strict=True) if reply)


# --- Redis ------------------------------------------------------------------------------------
def redis_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``Redis.from_url`` for these settings' user, password and TLS."""
    options: dict[str, Any] = {}
    if settings.redis_username is not None:
        options["username"] = settings.redis_username
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_url.startswith("rediss://"):
        if settings.redis_tls_ca_file is not None:
            options["ssl_ca_certs"] = str(settings.redis_tls_ca_file.expanduser())
        if settings.redis_tls_cert_file is not None:
            options["ssl_certfile"] = str(settings.redis_tls_cert_file.expanduser())
            options["ssl_keyfile"] = str(settings.redis_tls_key_file.expanduser())  # type: ignore[union-attr]
    return options


#: RESP2 on the wire. redis-py 8 speaks RESP3 by default and turns the replies back into the
#: RESP2 shapes in Python (a sorted set's scores come as doubles, are formatted back to bytes and
#: parsed again): twice the time of a top-100 read with hiredis (`bench.read_latency`). RESP2
#: replies arrive in those shapes, so nothing else changes.
REDIS_PROTOCOL = 2


def redis_async(settings: Settings, **options: Any) -> aioredis.Redis:
    """An asyncio Redis client; ``options`` add to (or override) the settings' ones. Its
    connections pack commands with hiredis (`hiredis_packing`)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(settings.redis_url, **{"protocol": REDIS_PROTOCOL,
                                                      **redis_options(settings), **options})
    pool = client.connection_pool
    pool.connection_class = hiredis_packing(pool.connection_class)
    return client


_PACKING: dict[type, type] = {}
_REFUSED = frozenset({bool, type(None)})
_VIEWS = frozenset({bytearray, memoryview})


def hiredis_packing(base: type) -> type:
    r"""``base``, a redis-py asyncio connection class (TCP, TLS or Unix socket), packing commands
    with hiredis as redis-py's blocking connections do: its asyncio ones pack in Python, 87 µs
    against 29 µs for a 50-member ``ZADD`` (the same bytes; `tests/unit/test_connections.py`).
    Every batch writes thousands of such commands.

    >>> from redis.asyncio.connection import Connection
    >>> hiredis_packing(Connection)().pack_command("ZADD", "k", 0.5, "m")
    [b'*4\r\n$4\r\nZADD\r\n$1\r\nk\r\n$3\r\n0.5\r\n$1\r\nm\r\n']
    """
    if base in _PACKING or getattr(base, "packs_with_hiredis", False):
        return _PACKING.get(base, base)
    import hiredis
    from redis.exceptions import DataError

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # a command name with spaces: 'CLIENT SETINFO'
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        kinds = set(map(type, args))
        if kinds & _REFUSED:  # as redis-py's encoder refuses them
            raise DataError(f"Invalid input of type: {sorted(t.__name__ for t in kinds & _REFUSED)}"
                            ". Convert to a bytes, string, int or float first.")
        if kinds & _VIEWS:
            args = tuple(bytes(a) if type(a) in _VIEWS else a for a in args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(str(exc)) from exc

    packed = type(f"Hiredis{base.__name__}", (base,),
                  {"pack_command": pack_command, "packs_with_hiredis": True,
                   "__doc__": f"{base.__name__} packing commands with hiredis."})
    _PACKING[base] = packed
    return packed


async def write_pipelined(client: aioredis.Redis, commands: Sequence[Sequence[Any]]) -> None:
    """Send ``commands`` (writes whose replies are not needed) in one write on one of the
    client's connections, and read their replies under one deadline (the connection's
    ``socket_timeout``) instead of one per reply: redis-py's pipeline handles every reply in
    Python, each under a timeout of its own — a large part of writing the settle pass's
    neighbour lists (two commands a list, hundreds of thousands after a flood of new items).
    An error reply raises it (`redis.exceptions.ResponseError`) once read; on any failure the
    connection is dropped, not reused with replies unread.
    """
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if not commands:
        return
    pool = client.connection_pool
    connection = await pool.get_connection()
    try:
        payload = connection.pack_commands(commands)  # its own packer: `hiredis_packing`
        async with asyncio.timeout(connection.socket_timeout):
            await connection.send_packed_command(payload)
            for _ in range(len(commands)):
                await connection.read_response(timeout=math.inf)  # under the deadline above
    except BaseException as exc:
        await connection.disconnect(nowait=True)
        if isinstance(exc, TimeoutError):  # the deadline: as redis-py reports a read timeout
            raise RedisTimeoutError(f"{len(commands)} pipelined commands not answered within "
                                    f"{connection.socket_timeout} s") from exc
        raise
    finally:
        await pool.release(connection)


def redis_sync(settings: Settings, **options: Any) -> redis.Redis:
    """A blocking Redis client; ``options`` add to (or override) the settings' ones."""
    import redis

    return redis.Redis.from_url(settings.redis_url, **{"protocol": REDIS_PROTOCOL,
                                                       **redis_options(settings), **options})


# --- Kafka ------------------------------------------------------------------------------------
def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the SSL and SASL_SSL protocols (system CAs unless a CA file is set)."""
    if "SSL" not in settings.kafka_security_protocol:
        return None
    from aiokafka.helpers import create_ssl_context

    def path(value: object) -> str | None:
        return None if value is None else str(value)

    return create_ssl_context(cafile=path(settings.kafka_ssl_cafile),
                              certfile=path(settings.kafka_ssl_certfile),
                              keyfile=path(settings.kafka_ssl_keyfile))


def kafka_auth(settings: Settings) -> dict[str, Any]:
    """The security keyword arguments every aiokafka client takes."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_username  # PLAIN and SCRAM alike
        options["sasl_plain_password"] = settings.kafka_password.get_secret_value()  # type: ignore[union-attr]
    return options


def kafka_options(settings: Settings, **options: Any) -> dict[str, Any]:
    """Bootstrap servers and security, plus ``options``, for any aiokafka client."""
    return {"bootstrap_servers": settings.kafka_bootstrap_servers, **kafka_auth(settings),
            **options}


MAX_BATCH_BYTES = 512 * 1024  # a producer's batches: well under the broker's default 1 MiB


def kafka_producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(**kafka_options(settings, **options))


def worker_producer(settings: Settings) -> AIOKafkaProducer:
    """The stream worker's producer (dead letters, ranker examples): every write acknowledged
    by all replicas, idempotent, and batches of up to `MAX_BATCH_BYTES`. A logged ranker example
    is ~13 KB (100 candidates' features): with aiokafka's default 16 KB batches nearly every
    example started a batch of its own, and sending them took a quarter of the worker's CPU."""
    return kafka_producer(settings, acks="all", enable_idempotence=True,
                          max_batch_size=MAX_BATCH_BYTES)


def kafka_consumer(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(*topics, **kafka_options(settings, **options))


def kafka_admin(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(**kafka_options(settings, **options))


# --- Faust ------------------------------------------------------------------------------------
def faust_broker(settings: Settings) -> list[str]:
    """The Faust app's broker URLs, with the scheme of tastemaker's Faust transport
    (`streams.runtime.faust_consumer`: Faust's aiokafka transport, without four tasks per
    message)."""
    from streams.runtime.faust_consumer import SCHEME

    return [f"{SCHEME}://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")]


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """``broker_credentials`` of the Faust app: SASL (over TLS for SASL_SSL), TLS, or None."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=settings.kafka_username,
        password=settings.kafka_password.get_secret_value(),  # type: ignore[union-attr]
        mechanism=settings.kafka_sasl_mechanism, ssl_context=context)


# --- a start-up check -------------------------------------------------------------------------
class CredentialsRejected(RuntimeError):
    """A service refused the configured credentials: the process cannot work, say so at start."""


async def check_kafka_credentials(settings: Settings, *, timeout_s: float = 15.0) -> None:
    """Connect to a bootstrap server with the settings' security and raise `CredentialsRejected`
    naming the settings if authentication fails: a SASL user or password refused, a broker
    certificate the configured CA cannot verify, or a client certificate the broker refuses.
    aiokafka itself only logs these and keeps retrying ("Unable to bootstrap"), so they would
    otherwise look like a hang. An unreachable broker is not an error here: the clients retry
    until it answers."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return
    from aiokafka.conn import create_conn
    from aiokafka.errors import AuthenticationFailedError, KafkaError, SaslAuthenticationFailed

    auth = kafka_auth(settings)
    p = ENV_PREFIX
    for server in settings.kafka_bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(host, int(port), **auth), timeout_s)
        except (SaslAuthenticationFailed, AuthenticationFailedError) as exc:
            raise CredentialsRejected(
                f"Kafka at {server} rejected {settings.kafka_sasl_mechanism} authentication as "
                f"{p}KAFKA_USERNAME={settings.kafka_username!r} (check "
                f"{p}KAFKA_PASSWORD): {exc}") from None
        except ssl.SSLCertVerificationError as exc:
            trusted = (f"{p}KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile}"
                       if settings.kafka_ssl_cafile else f"the system's CAs ({p}KAFKA_SSL_CAFILE "
                       "is not set)")
            raise CredentialsRejected(
                f"Kafka at {server} presented a certificate that {trusted} cannot verify: "
                f"{exc.verify_message} (set {p}KAFKA_SSL_CAFILE to the CA that signed the "
                f"broker's certificate)") from None
        except KafkaError as exc:
            if _refused_our_certificate(exc.__cause__):
                mine = (f"{p}KAFKA_SSL_CERTFILE={settings.kafka_ssl_certfile}"
                        if settings.kafka_ssl_certfile else f"no {p}KAFKA_SSL_CERTFILE")
                raise CredentialsRejected(
                    f"Kafka at {server} refused this client's TLS certificate ({mine}): "
                    f"{exc.__cause__.reason}; it asks for one signed by a CA it trusts (set "
                    f"{p}KAFKA_SSL_CERTFILE and {p}KAFKA_SSL_KEYFILE)") from None
            logger.warning("Kafka at %s did not answer the credentials check: %r", server, exc)
            continue
        except (OSError, TimeoutError) as exc:
            logger.warning("Kafka at %s did not answer the credentials check: %r", server, exc)
            continue
        conn.close()
        return


def _refused_our_certificate(cause: BaseException | None) -> bool:
    """Whether a TLS error is the broker's alert about the client's certificate (none, or one
    it does not trust): aiokafka reports it as the connection closing, caused by it."""
    reason = getattr(cause, "reason", None) or ""
    return (isinstance(cause, ssl.SSLError) and "ALERT" in reason
            and ("CERTIFICATE" in reason or "UNKNOWN_CA" in reason))


def check_redis_credentials(settings: Settings, *, timeout_s: float = 10.0) -> None:
    """PING Redis with the settings' user and password; `CredentialsRejected` naming the
    settings when Redis refuses them (an unreachable Redis is retried later, not an error)."""
    import redis

    client = redis_sync(settings, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise CredentialsRejected(
            f"Redis at {settings.redis_url} refused {ENV_PREFIX}REDIS_USERNAME="
            f"{settings.redis_username!r} (check {ENV_PREFIX}REDIS_PASSWORD): {exc}") from None
    except (redis.RedisError, OSError) as exc:
        logger.warning("Redis did not answer the credentials check: %r", exc)
    finally:
        client.close()
