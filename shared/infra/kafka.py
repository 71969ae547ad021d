"""Apache Kafka 4.x in KRaft mode (combined broker+controller nodes), jars from Maven Central via mvn."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.infra.paths import DEPLOY_DIR, cache_dir
from shared.infra.process import InfraError, ManagedProcess, run_with_status
from shared.topics import CATALOG

if TYPE_CHECKING:
    from shared.settings import KafkaSettings

KAFKA_VERSION = "4.1.1"  # keep in step with deploy/kafka/pom.xml


def install_kafka(version: str = KAFKA_VERSION) -> Path:
    """Resolve the broker's jars into the cache once; later runs reuse them."""
    libs = cache_dir() / "kafka" / version / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise InfraError("mvn not found: install Maven (apt-get install maven) to resolve Kafka's jars")
    if shutil.which("java") is None:
        raise InfraError("java not found: Kafka 4.x needs Java 17 or newer")
    run_with_status(
        f"resolving Apache Kafka {version} jars from Maven Central (first run only)",
        [
            "mvn",
            "-B",
            "-ntp",
            "-f",
            str(DEPLOY_DIR / "kafka" / "pom.xml"),
            "dependency:copy-dependencies",
            f"-Dkafka.version={version}",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        cache_dir() / "logs" / "kafka-mvn.log",
    )
    marker.touch()
    return libs


@dataclass(frozen=True)
class ListenerSecurity:
    """A SASL_SSL client listener: TLS with a PEM certificate and key, SCRAM users (name -> password)
    created in the cluster metadata when the storage is formatted. The broker itself speaks to its
    listener (inter-broker traffic) as `broker_user`. The controller listener stays PLAINTEXT.
    With `tls_only_listener`, each broker also serves plain TLS (SSL, no client authentication) on
    its broker port + 2: only for testing SSL clients, never where the data matters."""

    cert_file: Path  # PEM certificate chain the broker presents; clients name it (or its CA) as ssl_cafile
    key_file: Path  # unencrypted PEM (PKCS#8) private key of the certificate
    users: dict[str, str] = field(repr=False)  # never in a repr: they are passwords
    broker_user: str
    mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    tls_only_listener: bool = False

    def __post_init__(self) -> None:
        if self.broker_user not in self.users:
            raise ValueError(f"broker_user {self.broker_user!r} is not one of the SCRAM users")
        for name, password in self.users.items():
            # Both land in a JAAS line and a `--add-scram` argument: no quoting games.
            if not name.isidentifier() or not password or any(c in password for c in '"\\,[]\n'):
                raise ValueError(f"SCRAM user {name!r}: use a plain name and a password without quotes")


@dataclass
class KafkaCluster:
    """One node by default; three for fault tests (replication 3, min.insync.replicas 2).

    With `security`, every broker's client listener is SASL_SSL (see ListenerSecurity) instead of
    PLAINTEXT; `client_settings(user)` gives the KafkaSettings a client needs to reach it."""

    state_dir: Path
    nodes: int = 1
    base_port: int = 19092
    version: str = KAFKA_VERSION
    heap: str = "512m"
    security: ListenerSecurity | None = None

    def broker_port(self, index: int) -> int:
        return self.base_port + 100 * index

    def controller_port(self, index: int) -> int:
        return self.base_port + 100 * index + 1

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{self.broker_port(i)}" for i in range(self.nodes))

    def tls_only_port(self, index: int) -> int:
        return self.base_port + 100 * index + 2

    def client_settings(self, user: str | None = None, password: str | None = None) -> KafkaSettings:
        """KafkaSettings for a client of this cluster: PLAINTEXT, or SASL_SSL as `user` (default: the
        broker's user) with its password (or `password`), trusting the listener's certificate."""
        from pydantic import SecretStr

        from shared.settings import KafkaSettings

        if self.security is None:
            return KafkaSettings(bootstrap_servers=self.bootstrap_servers)
        user = user or self.security.broker_user
        return KafkaSettings(
            bootstrap_servers=self.bootstrap_servers,
            security_protocol="SASL_SSL",
            sasl_mechanism=self.security.mechanism,
            sasl_username=user,
            sasl_password=SecretStr(password if password is not None else self.security.users[user]),
            ssl_cafile=self.security.cert_file,
        )

    def _client_security(self) -> dict[str, Any]:
        """Keyword arguments that give this module's own aiokafka clients the listener's security."""
        if self.security is None:
            return {}
        from shared.bus import kafka_client_security

        return kafka_client_security(self.client_settings())

    def node_dir(self, index: int) -> Path:
        return self.state_dir / "kafka" / f"node-{index}"

    def process(self, index: int) -> ManagedProcess:
        libs = cache_dir() / "kafka" / self.version / "libs"
        return ManagedProcess(
            name=f"kafka-{index}",
            command=[
                "java",
                f"-Xms{self.heap}",
                f"-Xmx{self.heap}",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'kafka' / 'log4j2.properties'}",
                "-cp",
                f"{libs}/*",
                "kafka.Kafka",
                str(self.node_dir(index) / "server.properties"),
            ],
            state_dir=self.state_dir,
            health=lambda: _port_open(self.broker_port(index)),
            start_timeout_s=90,
        )

    def _write_config(self, index: int) -> Path:
        replicas = min(3, self.nodes)
        voters = ",".join(f"{i + 1}@127.0.0.1:{self.controller_port(i)}" for i in range(self.nodes))
        node_dir = self.node_dir(index)
        (node_dir / "data").mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(index + 1),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.broker_port(index)},"
            f"CONTROLLER://127.0.0.1:{self.controller_port(index)}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.broker_port(index)}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node_dir / "data"),
            "num.partitions": "3",
            "default.replication.factor": str(replicas),
            "min.insync.replicas": str(min(2, replicas)),
            "offsets.topic.replication.factor": str(replicas),
            "offsets.topic.num.partitions": "12",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min(2, replicas)),
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "unclean.leader.election.enable": "false",
        }
        path = node_dir / "server.properties"
        if self.security is not None:
            props.update(self._secured_listener(index))
            path.touch(mode=0o600)  # it holds the private key and the broker's password
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _secured_listener(self, index: int) -> dict[str, str]:
        """server.properties entries that make the client (and inter-broker) listener SASL_SSL."""
        assert self.security is not None
        sec = self.security
        port = self.broker_port(index)
        mechanism = sec.mechanism.lower()
        broker_password = sec.users[sec.broker_user]
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{sec.broker_user}" password="{broker_password}";'
        )

        def pem(path: Path) -> str:  # PEM content as one properties line (\n escapes newlines)
            return path.read_text().strip().replace("\n", "\\n")

        client_listeners = f"SASL_SSL://127.0.0.1:{port}"
        if sec.tls_only_listener:
            client_listeners += f",SSL://127.0.0.1:{self.tls_only_port(index)}"
        return {
            "listeners": f"{client_listeners},CONTROLLER://127.0.0.1:{self.controller_port(index)}",
            "advertised.listeners": client_listeners,
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": sec.mechanism,
            "sasl.mechanism.inter.broker.protocol": sec.mechanism,
            f"listener.name.sasl_ssl.{mechanism}.sasl.jaas.config": jaas,
            # PEM key store and trust store given inline (KIP-651): an unencrypted key needs no password.
            "ssl.keystore.type": "PEM",
            "ssl.keystore.certificate.chain": pem(sec.cert_file),
            "ssl.keystore.key": pem(sec.key_file),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.certificates": pem(sec.cert_file),
        }

    def _format_storage(self, cluster_id: str) -> None:
        """Format each new node's KRaft storage once; the JVMs run side by side."""
        libs = cache_dir() / "kafka" / self.version / "libs"
        jobs = {}
        for i in range(self.nodes):
            config = self._write_config(i)
            if (self.node_dir(i) / "data" / "meta.properties").exists():
                continue
            scram: list[str] = []
            if self.security is not None:  # SCRAM users exist from the first start (KRaft metadata)
                for name, password in self.security.users.items():
                    scram += ["--add-scram", f"{self.security.mechanism}=[name={name},password={password}]"]
            jobs[i] = subprocess.Popen(
                [
                    "java",
                    "-cp",
                    f"{libs}/*",
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(config),
                    *scram,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        for i, job in jobs.items():
            output, _ = job.communicate()
            if job.returncode != 0:
                raise InfraError(f"formatting KRaft storage of kafka-{i} failed:\n{output}")

    def cluster_id(self) -> str:
        path = self.state_dir / "kafka" / "cluster.id"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            cluster_id = "-"
            while cluster_id.startswith("-"):  # StorageTool reads a leading "-" as an option
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            path.write_text(cluster_id)
        return path.read_text().strip()

    def start(self, create_topics: bool = True) -> None:
        install_kafka(self.version)
        self._format_storage(self.cluster_id())
        # Start every node before waiting: a KRaft quorum of three needs two up to elect a leader.
        procs = [self.process(i) for i in range(self.nodes)]
        for proc in procs:
            proc.start(wait=False)
        for proc in procs:
            proc.wait_healthy()
        asyncio.run(self.wait_ready())
        if create_topics:
            asyncio.run(self.create_catalog_topics())

    def stop(self) -> None:
        # Signal every node first: stopped one by one, the last ones lose quorum and hang.
        procs = [self.process(i) for i in range(self.nodes)]
        for proc in procs:
            proc.signal()
        for proc in procs:
            proc.wait_stopped(timeout_s=30)

    def running(self) -> bool:
        return all(self.process(i).running() for i in range(self.nodes))

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until every broker is registered in cluster metadata."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        last_error: Exception | None = None
        while asyncio.get_running_loop().time() < deadline:
            client = AIOKafkaClient(
                bootstrap_servers=self.bootstrap_servers, request_timeout_ms=3000, **self._client_security()
            )
            try:
                await client.bootstrap()
                metadata = await client.fetch_all_metadata()
                if len(metadata.brokers()) >= self.nodes:
                    return
            except Exception as exc:  # broker still starting
                last_error = exc
            finally:
                await client.close()
            await asyncio.sleep(0.5)
        raise InfraError(f"Kafka cluster not ready after {timeout_s}s: {last_error!r}")

    async def create_catalog_topics(self) -> None:
        replicas = min(3, self.nodes)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, **self._client_security())
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [
                NewTopic(
                    t.name,
                    num_partitions=t.partitions,
                    replication_factor=replicas,
                    topic_configs={"retention.ms": str(t.retention_ms)},
                )
                for t in CATALOG
                if t.name not in existing
            ]
            if new:
                with contextlib.suppress(TopicAlreadyExistsError):  # another starter won the race
                    await admin.create_topics(new)
            await self._wait_topics_visible(admin)
        finally:
            await admin.close()

    async def _wait_topics_visible(self, admin: AIOKafkaAdminClient, timeout_s: float = 60.0) -> None:
        """Return once every catalog topic has all its partitions in the metadata brokers serve:
        right after creation a broker may still answer with none, and clients would fail."""
        expected = {t.name: t.partitions for t in CATALOG}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        missing: list[str] = list(expected)
        while loop.time() < deadline:
            described = await admin.describe_topics(list(expected))
            missing = [
                d["topic"]
                for d in described
                if d["error_code"] != 0 or len(d["partitions"]) != expected.get(d["topic"], -1)
            ]
            if not missing:
                return
            await asyncio.sleep(0.25)
        raise InfraError(f"catalog topics not visible after {timeout_s:.0f}s: {missing}")


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0
