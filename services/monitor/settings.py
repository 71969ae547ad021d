"""Settings of the monitor service (environment prefix LLMOPS_MONITOR_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

RedactionMode = Literal["store", "hash", "drop"]


class MonitorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_MONITOR_", extra="ignore")

    service_name: str = Field(default="monitor", description="Name in logs, metrics, traces and events.")
    grpc_port: int = Field(default=50055, description="gRPC port (health, reflection and the service's API).")
    metrics_port: int = Field(default=9105, description="Prometheus /metrics port.")

    # --- ClickHouse -------------------------------------------------------------------------------
    clickhouse_url: str = Field(
        default="",
        description="ClickHouse server URL for clickhouse-connect (e.g. http://clickhouse:8123); empty "
        "uses the embedded chdb engine at clickhouse_path, owned by this process.",
    )
    clickhouse_username: str = Field(default="default", description="ClickHouse server user name.")
    clickhouse_password_file: Path | None = Field(
        default=None, description="File holding the ClickHouse server password (empty: no password)."
    )
    clickhouse_path: Path = Field(
        default=Path(".llmops/monitor/chdb"),
        description="Data folder of the embedded chdb engine (one process may open it: this one).",
    )
    requests_ttl_days: int = Field(default=30, description="Days request rows and feedback are kept.")
    spans_ttl_days: int = Field(default=7, description="Days telemetry spans and ingest events are kept.")
    rollup_ttl_days: int = Field(default=365, description="Days the per-minute rollups are kept.")
    fast_path_min_records: int = Field(
        default=2000,
        ge=1,
        description="Batches of at least this many answers are stored by the ClickHouse engine from the "
        "records as they came (services/monitor/native.py: a fixed cost per batch, less per event); "
        "smaller ones event by event in Python. 2,000 is where the fast path starts to win (the monitor "
        "benchmark's batch-size row).",
    )
    max_batch_records: int = Field(
        default=20_000,
        description="Most Kafka records consumed and inserted together (one INSERT per table); a batch "
        "holds what the consumer has fetched, so a quiet topic still gives small batches at once. Large "
        "batches make a backlog drain faster (the fast path's cost per batch is spread wider).",
    )
    consumers: int = Field(
        default=2,
        ge=1,
        description="Kafka consumers in this process, members of its group, each over its share of the "
        "partitions: while one member's batch is being stored, the next member's is fetched and checked "
        "(a consumer handles one batch at a time). One ClickHouse worker thread still stores them in turn.",
    )
    heartbeat_interval_ms: int = Field(
        default=500,
        description="How often each consumer heartbeats to the group coordinator (Kafka's "
        "heartbeat.interval.ms, 3 s by default): a member hears of a rebalance at its next heartbeat, so "
        "the consumers of one process, which join one after another, share the partitions sooner.",
    )
    max_partition_fetch_bytes: int = Field(
        default=8 * 1024 * 1024,
        description="Most bytes one fetch returns per partition (Kafka's max.partition.fetch.bytes): "
        "large enough that a backlog fills a batch of max_batch_records.",
    )
    fetch_min_bytes: int = Field(
        default=128 * 1024,
        description="Bytes a fetch waits for at the broker, up to fetch_max_wait_ms (Kafka's "
        "fetch.min.bytes; the record batches as stored, compressed when the producers compress them), per "
        "consumer: light traffic is inserted in a few batches a second rather than "
        "one per event (each INSERT costs the engine a part and merges; the query path shares the CPUs). "
        "With the default 2 consumers the process inserts about every 256 KiB of answers, and a consumer "
        "waits no longer for its 128 KiB than one consumer waited for 256 KiB of all the traffic.",
    )
    fetch_max_wait_ms: int = Field(
        default=500,
        description="Longest a fetch waits at the broker for fetch_min_bytes (Kafka's fetch.max.wait.ms): "
        "the most light traffic, and the tail of a backlog, waits before it is fetched. Under light "
        "traffic each consumer brings one batch per wait (an insert per table each). 2,000 cut the "
        "monitor's CPU in the e2e benchmark's query blocks from 5.6-10.7% to 0.9-1.6% of a CPU, but the "
        "last records of a burst then wait up to 2 s (README, monitor on vs off).",
    )
    light_traffic_linger_s: float = Field(
        default=2.0,
        ge=0,
        description="Under light traffic, each consumer handles a batch of fewer than "
        "light_traffic_below_records no sooner than this many seconds after its previous such batch "
        "(shared.service.LightTrafficLinger): fewer, larger inserts when answers trickle in, each insert "
        "costing a part, a rollup and a check of stored versions, at the price of up to this much more "
        "lag for that trickle. 0 turns it off.",
    )
    light_traffic_below_records: int = Field(
        default=64,
        ge=1,
        description="Batches smaller than this count as light traffic for light_traffic_linger_s. Kept "
        "well under what one fetch brings at moderate traffic (fetch_min_bytes of compressed answers, "
        "about 128 at 1,000 answers/s): a lingering consumer reads one fetch per linger, so a larger "
        "threshold would throttle it (at fast_path_min_records, the lag at 1,000/s grew to p50 5 s).",
    )
    fetch_max_bytes: int = Field(
        default=64 * 1024 * 1024, description="Most bytes one fetch returns in all (Kafka's fetch.max.bytes)."
    )
    reconnect_interval_s: float = Field(
        default=2.0, description="Least seconds between attempts to reconnect to an unavailable ClickHouse."
    )

    # --- Quality signals ---------------------------------------------------------------------------
    quality_window_s: float = Field(
        default=300.0, description="Sliding window (seconds of event time) the quality signals cover."
    )
    quality_min_samples: int = Field(
        default=20, description="Requests a tenant needs in the window before its signals are judged."
    )
    groundedness_threshold: float = Field(
        default=0.5, description="Alert when the window's mean groundedness falls below this."
    )
    sentence_support_threshold: float = Field(
        default=0.6,
        description="Share of an answer sentence's content words that must occur in the retrieved "
        "context for the sentence to count as supported.",
    )
    empty_retrieval_threshold: float = Field(
        default=0.2, description="Alert when the share of answers with no retrieved chunk exceeds this."
    )
    error_rate_threshold: float = Field(
        default=0.05, description="Alert when the share of failed requests in the window exceeds this."
    )
    drift_threshold: float = Field(
        default=0.25,
        description="Alert when 1 - cosine(reference centroid, window centroid) of query embeddings "
        "exceeds this.",
    )
    drift_reference_size: int = Field(
        default=200, description="First query embeddings of a tenant that form its reference centroid."
    )
    alert_cooldown_s: float = Field(
        default=600.0, description="Least seconds between two alerts of one signal for one tenant."
    )

    # --- Redaction ---------------------------------------------------------------------------------
    redaction_default: RedactionMode = Field(
        default="store",
        description="What is stored of questions, answers and feedback text: 'store' keeps the text, "
        "'hash' keeps a salted SHA-256, 'drop' keeps nothing.",
    )
    redaction_tenants: dict[str, RedactionMode] = Field(
        default_factory=dict,
        description='Per-tenant redaction overriding the default, as JSON: {"acme": "hash", "bank": "drop"}.',
    )
    redaction_salt_file: Path | None = Field(
        default=None, description="File holding the salt of 'hash' redaction (empty: unsalted SHA-256)."
    )
