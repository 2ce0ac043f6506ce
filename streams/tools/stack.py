"""The local stack without Docker: one Kafka broker and one Redis server as plain processes.

Kafka runs in KRaft mode, broker and controller in one JVM, from jars that Maven fetches once into
``settings.cache_dir / f"kafka-{settings.kafka_version}"`` (outside git). Redis runs with AOF on.
Data, logs and pid files live under ``settings.stack_dir`` (``.tastemaker/``, gitignored)::

    .tastemaker/kafka/{server.properties,kafka.pid,kafka.log,data/,tls/}
    .tastemaker/redis/{redis.conf,redis.pid,redis.log,appendonlydir/}

A pid file only counts while its process is alive and still names our config file on its command
line, so ``down`` never signals a stranger that reused the pid. Each service is an object of its
own (`KafkaService`, `RedisService`, on `LocalService`); fault tests drive one at a time (call
these from a thread in async tests: ``await asyncio.to_thread(stack.kafka.restart)``)::

    stack = LocalStack(settings)
    stack.up()
    stack.redis.stop(kill=True)   # crash Redis; the AOF keeps what was fsynced
    stack.redis.start()
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from streams.settings import ENV_PREFIX, KafkaSecurityProtocol, Settings, load_settings

logger = logging.getLogger(__name__)

ServiceName = Literal["kafka", "redis"]
Outcome = Literal["started", "already running", "stopped", "not running"]
T = TypeVar("T")

HOST = "127.0.0.1"
SLF4J_VERSION = "1.7.36"
# Two cores and a laptop's memory: a small heap is plenty for test traffic.
KAFKA_JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-Djava.awt.headless=true",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss.SSS",
)
PORT_RELEASE_S = 10.0
LOG_TAIL_LINES = 30

#: Broker properties every single-node stack shares: this local stack, docker/compose.yml (as
#: ``KAFKA_*`` env, see `docker_env`) and the test containers. Internal topics get one replica;
#: messages up to 10 MiB pass the broker so the client's ``max_message_bytes`` is the limit tested.
SINGLE_NODE_BROKER: dict[str, str] = {
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
    "message.max.bytes": "10485760",
}

POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tastemaker</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka_version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka_version}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>{slf4j_version}</version>
    </dependency>
  </dependencies>
</project>
"""


#: Client settings that undo any security the caller's environment asks for: the local stack's
#: Redis and its default Kafka listener have none.
PLAINTEXT_CLIENT: dict[str, Any] = {
    "kafka_security_protocol": "PLAINTEXT", "kafka_username": None, "kafka_password": None,
    "kafka_ssl_cafile": None, "kafka_ssl_certfile": None, "kafka_ssl_keyfile": None,
    "redis_username": None, "redis_password": None, "redis_tls_ca_file": None,
    "redis_tls_cert_file": None, "redis_tls_key_file": None,
}


#: The optional Kafka listeners, by protocol: the setting that names each one's port. The
#: default PLAINTEXT listener (``kafka_port``) is always there; brokers talk to each other over it.
SECURE_LISTENERS: dict[KafkaSecurityProtocol, str] = {
    "SASL_PLAINTEXT": "kafka_sasl_port",  # SASL/PLAIN, the stack's SASL user
    "SSL": "kafka_ssl_port",  # TLS; clients present a certificate signed by the stack's CA
    "SASL_SSL": "kafka_sasl_ssl_port",  # TLS, then SCRAM-SHA-512 as the stack's SASL user
}
SCRAM_MECHANISM = "SCRAM-SHA-512"


class StackError(RuntimeError):
    """The local stack cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ServiceState:
    name: ServiceName
    running: bool
    pid: int | None
    address: str


@dataclass(frozen=True, slots=True)
class ServiceChange:
    name: ServiceName
    outcome: Outcome
    pid: int | None
    address: str
    seconds: float


def docker_env(properties: Mapping[str, str]) -> dict[str, str]:
    """Kafka properties as the ``apache/kafka`` image's environment variables.

    >>> docker_env({"message.max.bytes": "10485760", "share.coordinator.state.topic.min.isr": "1"})
    {'KAFKA_MESSAGE_MAX_BYTES': '10485760', 'KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR': '1'}
    """
    return {
        "KAFKA_" + key.replace("_", "__").replace("-", "___").replace(".", "_").upper(): value
        for key, value in properties.items()
    }


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on ``host:port`` (TIME_WAIT leftovers don't count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A port nothing listens on now, chosen by the OS: for private stacks, metrics endpoints
    and tests (the demo, the fault benchmark and the integration tests use this one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, also when the caller's thread has a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class LocalService:
    """One server process of the local stack, in its own folder under the stack's (config,
    data, log, pid file), owned through that pid file: a process counts as ours only while its
    command line names our config file. Subclasses say how to start it and where it listens."""

    name: ServiceName
    config_file: str  # in the service's folder; named on its command line
    stop_timeout_s: float  # SIGTERM, then this long before SIGKILL

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.settings = stack.settings
        self.dir = stack.root / self.name

    @property
    def address(self) -> str:
        raise NotImplementedError

    def ports(self) -> dict[str, int]:
        """The ports it listens on, by setting name."""
        raise NotImplementedError

    def start(self) -> ServiceChange:
        """Start it unless it runs already, and wait until it answers."""
        started = time.monotonic()
        pid = self.pid()
        outcome: Outcome = "already running"
        if pid is None:
            self.check_ports()
            pid = self._launch()
            outcome = "started"
        self._wait(pid, started)
        return ServiceChange(self.name, outcome, pid, self.address, _since(started))

    def _launch(self) -> int:
        """Prepare (config, data) and spawn the process; its pid."""
        raise NotImplementedError

    def _wait(self, pid: int, started: float) -> None:
        """Until it answers (`_wait_until_answering`)."""
        raise NotImplementedError

    def stop(self, *, kill: bool = False) -> ServiceChange:
        """SIGTERM (a clean shutdown) or, with ``kill``, SIGKILL (a crash)."""
        started = time.monotonic()
        pid = self.pid()
        if pid is None:
            return ServiceChange(self.name, "not running", None, self.address, _since(started))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        if not self._wait_gone(pid, self.stop_timeout_s):
            logger.warning("%s (pid %d) ignored SIGTERM for %gs, killing it", self.name, pid,
                           self.stop_timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 10.0):
                raise StackError(f"{self.name} (pid {pid}) survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        # A killed JVM's leader thread exits before its sockets close: wait for the ports, so a
        # start right after a stop doesn't take our own leftovers for a stranger's.
        deadline = time.monotonic() + PORT_RELEASE_S
        while not all(port_is_free(port) for port in self.ports().values()):
            if time.monotonic() > deadline:
                logger.warning("%s (pid %d) exited but its ports are still taken", self.name, pid)
                break
            time.sleep(0.05)
        return ServiceChange(self.name, "stopped", pid, self.address, _since(started))

    def restart(self) -> ServiceChange:
        self.stop()
        return self.start()

    def pid(self) -> int | None:
        """The pid of our running service, or None (a stale pid file is removed)."""
        path = self.pid_file
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        if self._alive(pid):
            return pid
        path.unlink(missing_ok=True)
        return None

    @property
    def pid_file(self) -> Path:
        return self.dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / f"{self.name}.log"

    def _spawn(self, command: list[str]) -> int:
        """Start ``command`` detached: a throwaway shell backgrounds it and exits, so the service
        belongs to init, not to the process that ran `up` (a CLI that exits, or a pytest session
        that would otherwise collect zombies), and its own session keeps a Ctrl-C away from it."""
        log = self.log_file
        with open(log, "ab") as f:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            f.write(f"\n--- {stamp} tastemaker starts {self.name}\n".encode())
        launcher = subprocess.run(
            ["sh", "-c", 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!', "sh", str(log),
             *command],
            cwd=self.dir,
            capture_output=True,
            text=True,
            start_new_session=True,
            check=True,
        )  # fmt: skip
        pid = int(launcher.stdout.strip())
        self.pid_file.write_text(f"{pid}\n")
        logger.info("started %s, pid %d", self.name, pid)
        return pid

    def _alive(self, pid: int) -> bool:
        proc = Path("/proc") / str(pid)
        if Path("/proc/self").exists():
            try:
                state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
                cmdline = (proc / "cmdline").read_bytes()
            except (OSError, IndexError):
                return False
            return state != "Z" and str(self.dir / self.config_file).encode() in cmdline
        try:  # no /proc (macOS): trust the pid file
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _wait_until_answering(self, pid: int, started: float, what: str,
                              answers: Callable[[], bool], *, poll_s: float) -> None:
        """Until ``answers()``; a StackError (with the log's tail) when the process exits first
        or ``STACK_START_TIMEOUT_S`` passes."""
        title = self.name.capitalize()
        while True:
            if not self._alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise StackError(f"{title} exited while starting; {self.log_tail()}")
            if answers():
                return
            if _since(started) > self.settings.stack_start_timeout_s:
                raise StackError(
                    f"{title} (pid {pid}) did not {what} on {self.address} within "
                    f"{self.settings.stack_start_timeout_s:g} s "
                    f"({ENV_PREFIX}STACK_START_TIMEOUT_S); {self.log_tail()}"
                )
            time.sleep(poll_s)

    def check_ports(self) -> None:
        ports = self.ports()
        for field, port in ports.items():
            if not port_is_free(port):
                raise StackError(
                    f"port {port} ({ENV_PREFIX}{field.upper()}) is already in use by a process "
                    f"this stack did not start; stop it or choose another port"
                )

    def log_tail(self) -> str:
        path = self.log_file
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return f"no log at {path}"
        return f"last lines of {path}:\n{_tail_text(text)}"


class KafkaService(LocalService):
    """One Kafka broker and controller (KRaft), its jars fetched with Maven."""

    name = "kafka"
    config_file = "server.properties"
    stop_timeout_s = 30.0

    def __init__(self, stack: LocalStack) -> None:
        super().__init__(stack)
        self.jars_dir = (
            self.settings.cache_dir.expanduser().absolute() / f"kafka-{self.settings.kafka_version}"
        )

    @property
    def address(self) -> str:
        return self.stack.kafka_bootstrap_servers

    def ports(self) -> dict[str, int]:
        s = self.settings
        ports = {"kafka_port": s.kafka_port, "kafka_controller_port": s.kafka_controller_port}
        for protocol, port in self.secure_ports(*SECURE_LISTENERS).items():
            ports[SECURE_LISTENERS[protocol]] = port
        return ports

    def _launch(self) -> int:
        java = _require("java", "a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")
        libs = self.fetch_jars()
        tls = self.stack.tls_dir
        if self.secure_ports("SSL", "SASL_SSL") and not (tls / "server.pem").exists():
            write_certificates(tls)
        properties = self._write_properties()
        if not (self.dir / "data" / "meta.properties").exists():
            self._format_storage(java, libs, properties)
        self.check_scram_user()
        return self._spawn([java, *KAFKA_JVM_OPTS, "-cp", f"{libs}/*", "kafka.Kafka",
                            str(properties)])

    def fetch_jars(self) -> Path:
        """Kafka's runtime jars, fetched with Maven on first use and reused afterwards."""
        libs = self.jars_dir / "libs"
        complete = self.jars_dir / "libs.complete"
        if complete.exists():
            return libs
        mvn = _require("mvn", "Maven (apt-get install maven) to fetch the Kafka jars")
        self.jars_dir.mkdir(parents=True, exist_ok=True)
        (self.jars_dir / "pom.xml").write_text(
            POM.format(kafka_version=self.settings.kafka_version, slf4j_version=SLF4J_VERSION)
        )
        partial = self.jars_dir / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        logger.info("fetching Kafka %s jars with Maven into %s", self.settings.kafka_version, libs)
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}",
                "-DincludeScope=runtime",
            ],
            cwd=self.jars_dir,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise StackError(
                f"fetching Kafka {self.settings.kafka_version} jars with Maven failed "
                f"(exit {result.returncode}; check {ENV_PREFIX}KAFKA_VERSION):\n"
                + _tail_text(result.stdout + result.stderr)
            )
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        complete.write_text(f"{len(list(libs.glob('*.jar')))} jars\n")
        return libs

    def _write_properties(self) -> Path:
        s = self.settings
        directory = self.dir
        directory.mkdir(parents=True, exist_ok=True)
        listeners = [f"PLAINTEXT://{HOST}:{s.kafka_port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        secure: dict[str, str] = {}  # brokers talk PLAINTEXT to each other
        ports = self.secure_ports(*SECURE_LISTENERS)
        for protocol, port in ports.items():
            listeners.append(f"{protocol}://{HOST}:{port}")
            protocols.append(f"{protocol}:{protocol}")
        if "SASL_PLAINTEXT" in ports:  # PLAIN: the one user and password in the JAAS config
            user, password = s.stack_sasl_username, s.stack_sasl_password.get_secret_value()
            secure["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] = "PLAIN"
            secure["listener.name.sasl_plaintext.plain.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{user}="{password}";')
        if "SSL" in ports or "SASL_SSL" in ports:  # PEM files, no Java keystore
            secure.update({
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(self.stack.tls_dir / "server.pem"),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.stack.tls_dir / "ca.crt"),
            })
        if "SSL" in ports:
            secure["listener.name.ssl.ssl.client.auth"] = "required"
        if "SASL_SSL" in ports:  # SCRAM: the credential lives in the cluster metadata
            mechanism = SCRAM_MECHANISM.lower()
            secure["listener.name.sasl_ssl.sasl.enabled.mechanisms"] = SCRAM_MECHANISM
            secure[f"listener.name.sasl_ssl.{mechanism}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;")
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{s.kafka_controller_port}",
            "listeners": ",".join([*listeners, f"CONTROLLER://{HOST}:{s.kafka_controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocols),
            **secure,
            "log.dirs": str(directory / "data"),
            "num.partitions": str(s.topic_partitions),
            "num.network.threads": "2",
            "num.io.threads": "4",
            **SINGLE_NODE_BROKER,
        }
        path = directory / "server.properties"
        path.touch(mode=0o600)  # it may hold the SASL password
        path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        return path

    def secure_ports(self, *protocols: KafkaSecurityProtocol) -> dict[str, int]:
        """The ports of the optional listeners of ``protocols`` that are set, by protocol."""
        found = {p: getattr(self.settings, SECURE_LISTENERS[p]) for p in protocols}
        return {p: port for p, port in found.items() if port is not None}

    def _scram_fingerprint(self) -> str:
        """What the SCRAM user was made from, hashed: the marker left at format time."""
        s = self.settings
        password = s.stack_sasl_password.get_secret_value()
        return hashlib.sha256(f"{SCRAM_MECHANISM}:{s.stack_sasl_username}:{password}".encode()
                              ).hexdigest()

    def check_scram_user(self) -> None:
        """A SCRAM user is created when the storage is formatted, never later: refuse a
        SASL_SSL listener over storage formatted without this user and password."""
        if not self.secure_ports("SASL_SSL"):
            return
        marker = self.dir / "scram-user.sha256"
        if not marker.exists() or marker.read_text().strip() != self._scram_fingerprint():
            raise StackError(
                f"Kafka's storage in {self.dir / 'data'} was formatted without the "
                f"SCRAM user {ENV_PREFIX}STACK_SASL_USERNAME={self.settings.stack_sasl_username!r}"
                f" and its {ENV_PREFIX}STACK_SASL_PASSWORD: run `tastemaker down --wipe` and "
                f"start again with {ENV_PREFIX}KAFKA_SASL_SSL_PORT set")

    def _format_storage(self, java: str, libs: Path, properties: Path) -> None:
        cluster_id = "-"
        while cluster_id.startswith("-"):  # as Kafka's Uuid does: a leading "-" reads as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        scram: list[str] = []
        if self.secure_ports("SASL_SSL"):  # the SASL user's SCRAM credential, at format time
            s = self.settings
            scram = ["--add-scram", f"{SCRAM_MECHANISM}=[name={s.stack_sasl_username},"
                     f"password={s.stack_sasl_password.get_secret_value()}]"]
        result = subprocess.run(
            [java, "-Xmx256m", "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format",
             "-t", cluster_id, "-c", str(properties), *scram],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(
                f"formatting Kafka storage in {properties.parent / 'data'} failed "
                f"(exit {result.returncode}):\n" + _tail_text(result.stdout + result.stderr)
            )
        logger.info("formatted Kafka storage, cluster id %s", cluster_id)
        if scram:
            (self.dir / "scram-user.sha256").write_text(self._scram_fingerprint() + "\n")

    def _wait(self, pid: int, started: float) -> None:
        probe = self.stack.client_settings()
        self._wait_until_answering(
            pid, started, "answer a metadata request",
            lambda: _accepts_connections(self.settings.kafka_port)
            and run_coroutine(kafka_answers(probe)), poll_s=0.25)


class RedisService(LocalService):
    """One Redis server with its append-only file on."""

    name = "redis"
    config_file = "redis.conf"
    stop_timeout_s = 10.0

    @property
    def address(self) -> str:
        return f"{HOST}:{self.settings.redis_port}"

    def ports(self) -> dict[str, int]:
        return {"redis_port": self.settings.redis_port}

    def _launch(self) -> int:
        return self._spawn([redis_server_binary(), str(self._write_conf())])

    def copy_data(self, destination: Path) -> Path:
        """A point-in-time copy of everything Redis holds (``SAVE``, then its ``dump.rdb``
        copied to ``destination``), for `restart_from`."""
        from streams.connections import redis_sync

        with redis_sync(self.stack.client_settings()) as client:
            client.save()
            directory = Path(client.config_get("dir")["dir"])
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(directory / "dump.rdb", destination)
        return destination

    def restart_from(self, copy: Path) -> ServiceChange:
        """Stop Redis and start it again holding exactly ``copy`` (`copy_data`): what a
        restore from a backup does, or a machine crash that lost what was written after the
        copy. Redis loads the copy with the AOF off (with it on, an empty AOF would win), then
        turns the AOF on again, rewriting it from the copy."""
        from streams.connections import redis_sync

        self.stop()
        directory = self.dir
        shutil.rmtree(directory / "appendonlydir", ignore_errors=True)
        shutil.copyfile(copy, directory / "dump.rdb")
        started = time.monotonic()
        self.check_ports()
        pid = self._spawn([redis_server_binary(),
                                    str(self._write_conf(appendonly=False))])
        self._wait(pid, started)
        with redis_sync(self.stack.client_settings()) as client:
            client.config_set("appendonly", "yes")
        self._write_conf()  # later starts read the AOF again
        return ServiceChange(self.name, "started", pid, self.address, _since(started))

    def _write_conf(self, *, appendonly: bool = True) -> Path:
        directory = self.dir
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "redis.conf"
        path.write_text(
            f"bind {HOST}\n"
            f"port {self.settings.redis_port}\n"
            f'dir "{directory}"\n'
            "daemonize no\n"
            'logfile ""\n'
            f"appendonly {'yes' if appendonly else 'no'}\n"
            "appendfsync everysec\n"
            # The config path on the command line is how a pid file recognises its process.
            'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"\n'
        )
        return path

    def _wait(self, pid: int, started: float) -> None:
        import redis

        from streams.connections import redis_sync

        def answers() -> bool:
            try:
                return bool(client.ping())
            except (redis.RedisError, OSError):
                return False  # not listening yet, or still loading the AOF

        client = redis_sync(self.stack.client_settings(), socket_timeout=1.0)
        try:
            self._wait_until_answering(pid, started, "answer PING", answers, poll_s=0.1)
        finally:
            client.close()


class LocalStack:
    """One Kafka broker (`KafkaService`) and one Redis server (`RedisService`) on 127.0.0.1,
    owned through pid files."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.stack_dir.expanduser().absolute()
        self.kafka = KafkaService(self)
        self.redis = RedisService(self)
        self.services: tuple[LocalService, ...] = (self.kafka, self.redis)

    def service(self, name: ServiceName) -> LocalService:
        return {s.name: s for s in self.services}[name]

    # --- addresses ------------------------------------------------------------------------------
    @property
    def kafka_bootstrap_servers(self) -> str:
        return f"{HOST}:{self.settings.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.settings.redis_port}/0"

    @property
    def tls_dir(self) -> Path:
        """The stack's CA, the broker's certificate and a client certificate
        (`write_certificates`), made at the first start with an SSL or SASL_SSL listener."""
        return self.kafka.dir / "tls"

    def listener_client_settings(self, protocol: KafkaSecurityProtocol) -> Settings:
        """These settings, pointed at this stack's listener of ``protocol`` as its client:
        SASL_PLAINTEXT as the SASL user (PLAIN), SSL with the stack's client certificate,
        SASL_SSL as the SASL user (SCRAM-SHA-512), both verifying the broker against the
        stack's CA."""
        if protocol == "PLAINTEXT":
            return self.client_settings()
        field = SECURE_LISTENERS[protocol]
        port = getattr(self.settings, field)
        if port is None:
            raise StackError(f"the stack has no {protocol} listener: set "
                             f"{ENV_PREFIX}{field.upper()}")
        options: dict[str, Any] = {"kafka_bootstrap_servers": f"{HOST}:{port}",
                                   "kafka_security_protocol": protocol}
        if protocol.startswith("SASL_"):
            options.update(kafka_sasl_mechanism="PLAIN" if protocol == "SASL_PLAINTEXT"
                           else SCRAM_MECHANISM,
                           kafka_username=self.settings.stack_sasl_username,
                           kafka_password=self.settings.stack_sasl_password)
        if protocol.endswith("SSL"):
            options["kafka_ssl_cafile"] = self.tls_dir / "ca.crt"
        if protocol == "SSL":
            options.update(kafka_ssl_certfile=self.tls_dir / "client.crt",
                           kafka_ssl_keyfile=self.tls_dir / "client.key")
        return load_settings(**{**self.client_settings().model_dump(), **options})

    def client_env(self) -> dict[str, str]:
        """The settings a client needs to reach this stack, as environment variables."""
        return {
            f"{ENV_PREFIX}KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            f"{ENV_PREFIX}REDIS_URL": self.redis_url,
        }

    def client_settings(self) -> Settings:
        """These settings, pointed at this stack's plaintext listener and Redis (no auth)."""
        return load_settings(
            **{
                **self.settings.model_dump(),
                "kafka_bootstrap_servers": self.kafka_bootstrap_servers,
                "redis_url": self.redis_url,
                **PLAINTEXT_CLIENT,
            }
        )

    # --- the whole stack ------------------------------------------------------------------------
    def up(self) -> list[ServiceChange]:
        """Start what is not running, wait until both answer, create missing topics.

        Ports are checked for every service first, so a busy Redis port doesn't leave a Kafka
        behind. Running it again changes nothing and reports "already running".
        """
        from streams.contract.topics import ensure_topics

        for service in self.services:
            if service.pid() is None:
                service.check_ports()
        changes = [service.start() for service in self.services]
        run_coroutine(ensure_topics(self.client_settings()))
        return changes

    def down(self, *, wipe: bool = False) -> list[ServiceChange]:
        """Stop what `up` started; with ``wipe`` also delete its data and logs."""
        changes = [service.stop() for service in reversed(self.services)]
        if wipe:
            for service in self.services:
                shutil.rmtree(service.dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.root.rmdir()  # only when empty: stack_dir may hold things that aren't ours
        return changes

    def status(self) -> list[ServiceState]:
        return [ServiceState(s.name, pid is not None, pid, s.address)
                for s in self.services for pid in [s.pid()]]


def redis_server_binary() -> str:
    """Path of ``redis-server``; as root on Debian/Ubuntu, installed with apt-get when missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        logger.warning("redis-server not found; installing it with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "redis-server"],
        ):
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise StackError(
                    f"{' '.join(command)} failed (exit {result.returncode}):\n"
                    + _tail_text(result.stdout + result.stderr)
                )
        _stop_system_redis()
        found = shutil.which("redis-server")
        if found:
            return found
    raise StackError(
        "redis-server not found on PATH: install it (apt-get install redis-server, "
        "brew install redis) or run `tastemaker up` as root to have it installed"
    )


def write_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, all
    signed by it, made with openssl into ``directory`` (one-day certificates would expire under
    a stack kept for weeks: these last ten years; they protect a local stack only). Also
    ``server.pem``: the server's key and certificate in one file, as Kafka's PEM keystore
    reads them. Returns the files by name."""
    openssl = _require("openssl", "openssl to make the TLS certificates of its SSL listeners")
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        result = subprocess.run([openssl, *args], cwd=directory, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"openssl {args[0]} failed (exit {result.returncode}):\n"
                             + _tail_text(result.stdout + result.stderr))

    days = "3650"
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", days, "-subj",
        "/CN=tastemaker-local-ca", "-keyout", "ca.key", "-out", "ca.crt")
    for name, extension in (("server", f"subjectAltName=IP:{HOST},DNS:localhost"),
                            ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=tastemaker-{name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (directory / f"{name}.ext").write_text(extension + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", days, "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    pem = directory / "server.pem"
    pem.touch(mode=0o600)
    pem.write_text((directory / "server.key").read_text() + (directory / "server.crt").read_text())
    return {n: directory / n for n in ("ca.crt", "server.crt", "server.key", "server.pem",
                                      "client.crt", "client.key")}


def _stop_system_redis() -> None:
    """The Debian package starts a system Redis on 6379 where systemd runs; we run our own."""
    if shutil.which("systemctl") and Path("/run/systemd/system").exists():
        subprocess.run(["systemctl", "disable", "--now", "redis-server"], capture_output=True)


def _require(program: str, what: str) -> str:
    found = shutil.which(program)
    if not found:
        raise StackError(f"{program} not found on PATH: the local stack needs {what}")
    return found


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a library's connection errors while we probe a service that is still starting."""
    quieted = logging.getLogger(logger_name)
    level = quieted.level
    quieted.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        quieted.setLevel(level)


async def kafka_answers(settings: Settings, timeout_s: float = 3.0) -> bool:
    """True when the broker at ``settings.kafka_bootstrap_servers`` answers a metadata request
    (with the settings' security) and knows its controller."""
    from aiokafka.errors import KafkaError

    from streams.connections import kafka_admin

    admin = kafka_admin(settings, request_timeout_ms=int(timeout_s * 1000))
    with _quiet("aiokafka"):
        try:
            await asyncio.wait_for(admin.start(), timeout_s)
            cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
            return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) >= 0
        except (KafkaError, OSError, TimeoutError):
            return False
        finally:
            await admin.close()


def _tail_text(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _since(started: float) -> float:
    return time.monotonic() - started
