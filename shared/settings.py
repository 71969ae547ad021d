"""Settings base classes. Each service subclasses ServiceSettings with its own env prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """Connection to the Kafka cluster, shared by all services (prefix LLMOPS_KAFKA_)."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:19092", description="Comma-separated host:port list of Kafka brokers."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol; SASL_SSL in production clusters."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism when security_protocol uses SASL."
    )
    sasl_username: str = Field(default="", description="SASL user name.")
    sasl_password_file: Path | None = Field(
        default=None,
        description="File holding the SASL password (e.g. a mounted Secret); wins over sasl_password.",
    )
    sasl_password: SecretStr | None = Field(
        default=None,
        description="SASL password from the environment (LLMOPS_KAFKA_SASL_PASSWORD), used when no "
        "sasl_password_file is set; masked in every repr and log.",
    )
    ssl_cafile: Path | None = Field(
        default=None,
        description="PEM CA bundle that signs the brokers' certificates (SSL, SASL_SSL); "
        "empty trusts the system's CAs.",
    )
    dead_letter_topic: str = Field(
        default="llmops.dead-letter.v1", description="Topic that receives events that cannot be processed."
    )
    acks: Literal["all", "1", "0"] = Field(
        default="all", description="Producer acknowledgement level; 'all' waits for min.insync.replicas."
    )
    compression_type: Literal["none", "lz4", "zstd", "gzip", "snappy"] = Field(
        default="none",
        description="Compression of the record batches this service produces (Kafka's compression.type), "
        "reply topics included. none: any Kafka client reads them (kafkajs reads no LZ4, Snappy or "
        "ZSTD without a codec of its own). lz4 where every consumer reads it (Java, librdkafka, aiokafka): "
        "producers pay little, and brokers store and consumers read fewer bytes (README, monitor sink).",
    )

    def sasl_secret(self) -> SecretStr:
        """The SASL password: the file's content (trimmed) if a file is set, else sasl_password."""
        if self.sasl_password_file is not None:
            return SecretStr(self.sasl_password_file.read_text().strip())
        return self.sasl_password or SecretStr("")


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses set `env_prefix`, e.g. LLMOPS_EMBEDDER_."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_SERVICE_", extra="ignore")

    service_name: str = Field(default="service", description="Name used in logs, metrics, traces, events.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Kafka connection.")
    consumer_group: str = Field(
        default="", description="Kafka consumer group; empty means 'llmops.<service_name>'."
    )
    grpc_host: str = Field(default="127.0.0.1", description="Address the gRPC server binds.")
    grpc_port: int = Field(default=0, description="gRPC port; 0 picks a free port (logged at start).")
    grpc_tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate chain: with the key file, the gRPC port serves TLS only."
    )
    grpc_tls_key_file: Path | None = Field(
        default=None, description="PEM private key of the TLS certificate."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the Prometheus endpoint binds.")
    metrics_port: int = Field(default=0, description="Prometheus /metrics port; 0 picks a free port.")
    log_level: str = Field(default="INFO", description="Python log level name.")
    graceful_timeout_s: float = Field(
        default=15.0, description="On SIGTERM, how long in-flight handlers may run before exit."
    )
    idempotency_db: Path | None = Field(
        default=None,
        description="SQLite file recording processed event ids; empty keeps them in memory only.",
    )
    idempotency_capacity: int = Field(
        default=100_000, description="How many recent event ids the in-memory store remembers."
    )
    ready_file: Path | None = Field(
        default=None,
        description="If set, the service writes its bound ports here as JSON once it is serving.",
    )

    @property
    def group_id(self) -> str:
        return self.consumer_group or f"llmops.{self.service_name}"


class WeaviateSettings(BaseSettings):
    """Connection to Weaviate (prefix LLMOPS_WEAVIATE_)."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_WEAVIATE_", extra="ignore")

    url: str = Field(default="http://127.0.0.1:19080", description="Weaviate HTTP endpoint.")
    grpc_port: int = Field(default=19051, description="Weaviate gRPC port (same host as url).")
    collection: str = Field(default="Chunk", description="Collection holding every tenant's chunks.")


class TritonSettings(BaseSettings):
    """Connection to Triton Inference Server (prefix LLMOPS_TRITON_)."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_TRITON_", extra="ignore")

    grpc_url: str = Field(default="127.0.0.1:19001", description="Triton gRPC endpoint host:port.")
