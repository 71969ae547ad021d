"""The monitor's ClickHouse schema and SQL: one DDL and one SQL for chdb and a ClickHouse server.

Tables (all ReplacingMergeTree, so replaying a topic never duplicates a row; reads use FINAL):

- `requests`: one wide row per request, sorting key (tenant_id, correlation_id), version column
  `version` (an answer outranks a failure, then the later event; services/monitor/domain.py).
  Before an insert the store also drops rows whose request is already stored with an equal or higher
  version, so the per-minute materialized view counts each request once.
- `feedback`, `ingest_events`, `spans`, `finetune_events`: one row per event, keyed by event_id.
- `requests_per_minute` (AggregatingMergeTree) fed by the materialized view `requests_per_minute_mv`:
  per tenant, minute, model and version: requests, failures, empty retrievals, tokens, groundedness
  sum and count, and total-latency quantile states. Dashboards read it for long ranges.

Every table has a TTL on its event time. Times are `DateTime64(3, 'UTC')`; queries return them as epoch
milliseconds so both engines give the same Python values.

`MonitorStore` is synchronous (one ClickHouse handle); `StoreRunner` runs it on one worker thread for
the asyncio service, opens and reopens the connection, and turns an unreachable ClickHouse into
ClickHouseUnavailable (a RetryableError: the consumer's batch stays uncommitted and is redelivered).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from services.monitor.domain import Row, newest_per_request
from shared.clickhouse import ClickHouse, ClickHouseUnavailable, QuerySettings

log = logging.getLogger(__name__)

T = TypeVar("T")

REQUEST_COLUMNS = (
    "correlation_id",
    "event_id",
    "tenant_id",
    "occurred_at",
    "version",
    "status",
    "question",
    "answer",
    "redaction",
    "model_name",
    "model_version",
    "prompt_template_id",
    "prompt_template_version",
    "prompt_tokens",
    "completion_tokens",
    "stage_ms",
    "total_ms",
    "chunk_ids",
    "chunk_scores",
    "cited_chunk_ids",
    "groundedness",
    "error_reason",
    "error_detail",
    "failed_stage",
)
FEEDBACK_COLUMNS = (
    "event_id",
    "correlation_id",
    "tenant_id",
    "occurred_at",
    "verdict",
    "rating",
    "has_correction",
    "correction",
    "comment",
    "redaction",
)
INGEST_COLUMNS = (
    "event_id",
    "correlation_id",
    "tenant_id",
    "occurred_at",
    "document_id",
    "kind",
    "chunk_count",
    "unchanged",
    "reason",
    "failed_stage",
)
SPAN_COLUMNS = (
    "event_id",
    "correlation_id",
    "tenant_id",
    "occurred_at",
    "trace_id",
    "span_id",
    "parent_span_id",
    "stage",
    "started_at",
    "duration_ms",
    "status",
    "error",
    "metrics",
    "attributes",
)
FINETUNE_COLUMNS = (
    "event_id",
    "correlation_id",
    "tenant_id",
    "occurred_at",
    "kind",
    "job_id",
    "state",
    "trigger",
    "base_model",
    "dataset_version",
    "model_name",
    "model_version",
    "previous_version",
    "traffic_share",
    "parameters",
    "metrics",
    "artifact_uri",
    "reason",
)
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "requests": REQUEST_COLUMNS,
    "feedback": FEEDBACK_COLUMNS,
    "ingest_events": INGEST_COLUMNS,
    "spans": SPAN_COLUMNS,
    "finetune_events": FINETUNE_COLUMNS,
}


@dataclass(frozen=True)
class Retention:
    requests_days: int = 30
    spans_days: int = 7
    rollup_days: int = 365


def ddl(retention: Retention) -> list[str]:
    """CREATE statements (idempotent) for every table and the rollup view."""
    r = retention
    return [
        f"""
CREATE TABLE IF NOT EXISTS requests (
    correlation_id String,
    event_id String,
    tenant_id LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    version UInt64,
    status LowCardinality(String),
    question String,
    answer String,
    redaction LowCardinality(String),
    model_name LowCardinality(String),
    model_version LowCardinality(String),
    prompt_template_id LowCardinality(String),
    prompt_template_version LowCardinality(String),
    prompt_tokens UInt32,
    completion_tokens UInt32,
    stage_ms Map(LowCardinality(String), Float64),
    total_ms Float64,
    chunk_ids Array(String),
    chunk_scores Array(Float32),
    cited_chunk_ids Array(String),
    groundedness Nullable(Float64),
    error_reason LowCardinality(String),
    error_detail String,
    failed_stage LowCardinality(String),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX occurred_at_minmax occurred_at TYPE minmax GRANULARITY 1
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, correlation_id)
TTL toDateTime(occurred_at) + INTERVAL {r.requests_days} DAY
""",
        f"""
CREATE TABLE IF NOT EXISTS feedback (
    event_id String,
    correlation_id String,
    tenant_id LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    verdict LowCardinality(String),
    rating UInt8,
    has_correction UInt8,
    correction String,
    comment String,
    redaction LowCardinality(String)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, event_id)
TTL toDateTime(occurred_at) + INTERVAL {r.requests_days} DAY
""",
        f"""
CREATE TABLE IF NOT EXISTS ingest_events (
    event_id String,
    correlation_id String,
    tenant_id LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    document_id String,
    kind LowCardinality(String),
    chunk_count UInt32,
    unchanged UInt8,
    reason String,
    failed_stage LowCardinality(String)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, event_id)
TTL toDateTime(occurred_at) + INTERVAL {r.spans_days} DAY
""",
        f"""
CREATE TABLE IF NOT EXISTS spans (
    event_id String,
    correlation_id String,
    tenant_id LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    trace_id String,
    span_id String,
    parent_span_id String,
    stage LowCardinality(String),
    started_at DateTime64(3, 'UTC'),
    duration_ms Float64,
    status LowCardinality(String),
    error String,
    metrics Map(LowCardinality(String), Float64),
    attributes Map(LowCardinality(String), String)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(occurred_at)
ORDER BY (tenant_id, stage, event_id)
TTL toDateTime(occurred_at) + INTERVAL {r.spans_days} DAY
""",
        f"""
CREATE TABLE IF NOT EXISTS finetune_events (
    event_id String,
    correlation_id String,
    tenant_id LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    kind LowCardinality(String),
    job_id String,
    state LowCardinality(String),
    trigger LowCardinality(String),
    base_model LowCardinality(String),
    dataset_version String,
    model_name LowCardinality(String),
    model_version LowCardinality(String),
    previous_version LowCardinality(String),
    traffic_share Float64,
    parameters Map(String, String),
    metrics Map(String, Float64),
    artifact_uri String,
    reason String
) ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, event_id)
TTL toDateTime(occurred_at) + INTERVAL {r.rollup_days} DAY
""",
        f"""
CREATE TABLE IF NOT EXISTS requests_per_minute (
    tenant_id LowCardinality(String),
    minute DateTime('UTC'),
    model_name LowCardinality(String),
    model_version LowCardinality(String),
    requests SimpleAggregateFunction(sum, UInt64),
    failed SimpleAggregateFunction(sum, UInt64),
    empty_retrievals SimpleAggregateFunction(sum, UInt64),
    prompt_tokens SimpleAggregateFunction(sum, UInt64),
    completion_tokens SimpleAggregateFunction(sum, UInt64),
    groundedness_sum SimpleAggregateFunction(sum, Float64),
    groundedness_count SimpleAggregateFunction(sum, UInt64),
    total_ms_quantiles AggregateFunction(quantilesIf(0.5, 0.95, 0.99), Float64, UInt8)
) ENGINE = AggregatingMergeTree
ORDER BY (tenant_id, minute, model_name, model_version)
TTL minute + INTERVAL {r.rollup_days} DAY
""",
        """
CREATE MATERIALIZED VIEW IF NOT EXISTS requests_per_minute_mv TO requests_per_minute AS
SELECT
    tenant_id,
    toStartOfMinute(occurred_at) AS minute,
    model_name,
    model_version,
    toUInt64(count()) AS requests,
    toUInt64(countIf(status = 'failed')) AS failed,
    toUInt64(countIf(status = 'answered' AND length(chunk_ids) = 0)) AS empty_retrievals,
    toUInt64(sum(prompt_tokens)) AS prompt_tokens,
    toUInt64(sum(completion_tokens)) AS completion_tokens,
    toFloat64(sum(ifNull(groundedness, 0))) AS groundedness_sum,
    toUInt64(count(groundedness)) AS groundedness_count,
    quantilesIfState(0.5, 0.95, 0.99)(total_ms, toUInt8(status = 'answered')) AS total_ms_quantiles
FROM requests
GROUP BY tenant_id, minute, model_name, model_version
""",
    ]


# --- reads -----------------------------------------------------------------------------------------


def _where(alias: str = "") -> str:
    p = f"{alias}." if alias else ""
    return (
        f"{p}tenant_id = {{tenant:String}}"
        f" AND {p}occurred_at >= fromUnixTimestamp64Milli({{start_ms:Int64}}, 'UTC')"
        f" AND {p}occurred_at < fromUnixTimestamp64Milli({{end_ms:Int64}}, 'UTC')"
    )


RECORD_SELECT = (
    "correlation_id, event_id, tenant_id, toUnixTimestamp64Milli(occurred_at) AS occurred_ms, status, "
    "question, answer, redaction, model_name, model_version, prompt_template_id, prompt_template_version, "
    "prompt_tokens, completion_tokens, stage_ms, total_ms, chunk_ids, chunk_scores, groundedness, "
    "error_reason, error_detail, failed_stage"
)
RECORD_FIELDS = (
    "correlation_id",
    "event_id",
    "tenant_id",
    "occurred_ms",
    "status",
    "question",
    "answer",
    "redaction",
    "model_name",
    "model_version",
    "prompt_template_id",
    "prompt_template_version",
    "prompt_tokens",
    "completion_tokens",
    "stage_ms",
    "total_ms",
    "chunk_ids",
    "chunk_scores",
    "groundedness",
    "error_reason",
    "error_detail",
    "failed_stage",
)

SQL_EXISTING_VERSIONS = """
SELECT tenant_id, correlation_id, max(version)
FROM requests
WHERE tenant_id IN {tenants:Array(String)} AND correlation_id IN {ids:Array(String)}
GROUP BY tenant_id, correlation_id
"""
SQL_LIST_REQUESTS = f"""
SELECT {RECORD_SELECT}
FROM requests FINAL
WHERE {_where()} AND ({{correlation_id:String}} = '' OR correlation_id = {{correlation_id:String}})
ORDER BY occurred_at DESC, correlation_id
LIMIT {{limit:UInt32}}
"""
SQL_LATENCY = f"""
SELECT stage, count() AS n, quantiles(0.5, 0.95, 0.99)(ms) AS q
FROM (
    SELECT stage, ms
    FROM requests FINAL
    ARRAY JOIN mapKeys(stage_ms) AS stage, mapValues(stage_ms) AS ms
    WHERE {_where()} AND status = 'answered'
    UNION ALL
    SELECT 'total' AS stage, total_ms AS ms
    FROM requests FINAL
    WHERE {_where()} AND status = 'answered'
)
GROUP BY stage
ORDER BY stage
"""
_BUCKET = "toUnixTimestamp(toStartOfInterval(occurred_at, toIntervalSecond({bucket:UInt32})))"
SQL_TRAFFIC_BUCKETS = f"""
SELECT {_BUCKET} AS bucket, count(), countIf(status = 'failed'),
       sum(prompt_tokens), sum(completion_tokens),
       countIf(status = 'answered'), countIf(status = 'answered' AND length(chunk_ids) = 0)
FROM requests FINAL
WHERE {_where()}
GROUP BY bucket
ORDER BY bucket
"""
# Per model version: answered requests and the failures attributed to a model (QueryFailed after routing).
SQL_TRAFFIC_MODELS = f"""
SELECT model_name, model_version, count(), sum(prompt_tokens), sum(completion_tokens),
       countIf(status = 'failed')
FROM requests FINAL
WHERE {_where()} AND (status = 'answered' OR model_name != '')
GROUP BY model_name, model_version
ORDER BY model_name, model_version
"""
SQL_FAILURES = f"""
SELECT error_reason, count()
FROM requests FINAL
WHERE {_where()} AND status = 'failed'
GROUP BY error_reason
ORDER BY error_reason
"""
SQL_GROUNDEDNESS_TREND = f"""
SELECT {_BUCKET} AS bucket, count(), avg(groundedness), min(groundedness)
FROM requests FINAL
WHERE {_where()} AND status = 'answered' AND groundedness IS NOT NULL
GROUP BY bucket
ORDER BY bucket
"""
SQL_WORST_GROUNDED = f"""
SELECT {RECORD_SELECT}
FROM requests FINAL
WHERE {_where()} AND status = 'answered' AND groundedness IS NOT NULL
ORDER BY groundedness ASC, occurred_at DESC, correlation_id
LIMIT {{limit:UInt32}}
"""
_FEEDBACK_COUNTS = (
    "count(), countIf(verdict = 'up'), countIf(verdict = 'down'), "
    "ifNull(avgIf(toFloat64(rating), rating > 0), 0), countIf(rating > 0), countIf(has_correction = 1)"
)
SQL_FEEDBACK_TOTAL = f"""
SELECT {_FEEDBACK_COUNTS}
FROM feedback FINAL
WHERE {_where()}
"""
SQL_FEEDBACK_BY_MODEL = f"""
SELECT r.model_name, r.model_version, r.prompt_template_version, {_FEEDBACK_COUNTS}
FROM (SELECT correlation_id, verdict, rating, has_correction FROM feedback FINAL WHERE {_where()}) AS f
INNER JOIN (
    SELECT correlation_id, model_name, model_version, prompt_template_version
    FROM requests FINAL
    WHERE tenant_id = {{tenant:String}} AND status = 'answered'
) AS r ON f.correlation_id = r.correlation_id
GROUP BY r.model_name, r.model_version, r.prompt_template_version
ORDER BY r.model_name, r.model_version, r.prompt_template_version
"""


def _number(value: Any) -> float:
    """A float from a ClickHouse number (None or NaN from an empty aggregate: 0)."""
    if value is None:
        return 0.0
    number = float(value)
    return 0.0 if math.isnan(number) else number


@dataclass(frozen=True)
class Window:
    tenant_id: str
    start_ms: int
    end_ms: int

    def params(self, **extra: Any) -> dict[str, Any]:
        return {"tenant": self.tenant_id, "start_ms": self.start_ms, "end_ms": self.end_ms, **extra}


class MonitorStore:
    """The monitor's tables on one ClickHouse handle (synchronous; see StoreRunner for asyncio)."""

    def __init__(self, db: ClickHouse, retention: Retention | None = None) -> None:
        self.db = db
        self.retention = retention or Retention()

    def create_schema(self) -> None:
        for statement in ddl(self.retention):
            self.db.command(statement)

    # --- writes ----------------------------------------------------------------------------------

    def insert_rows(self, table: str, rows: Sequence[Row], settings: QuerySettings | None = None) -> int:
        columns = TABLE_COLUMNS[table]
        if rows:
            self.db.insert(table, columns, [[row[c] for c in columns] for row in rows], settings)
        return len(rows)

    def insert_requests(self, rows: Sequence[Row]) -> list[Row]:
        """Insert the rows that change what is stored: one per request, and only when its version is
        higher than the stored one. Returns the rows inserted."""
        candidates = newest_per_request(rows)
        if not candidates:
            return []
        stored = {
            (tenant, cid): int(version)
            for tenant, cid, version in self.db.query(
                SQL_EXISTING_VERSIONS,
                {
                    "tenants": sorted({r["tenant_id"] for r in candidates}),
                    "ids": sorted({r["correlation_id"] for r in candidates}),
                },
            )
        }
        fresh = [
            r for r in candidates if r["version"] > stored.get((r["tenant_id"], r["correlation_id"]), -1)
        ]
        # One row per request already: the engine need not merge the block on insert (native.py's store)
        self.insert_rows("requests", fresh, {"optimize_on_insert": 0})
        return fresh

    # --- reads -----------------------------------------------------------------------------------

    def _records(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(zip(RECORD_FIELDS, row, strict=True)) for row in self.db.query(sql, params)]

    def list_requests(
        self, window: Window, *, correlation_id: str = "", limit: int = 100
    ) -> list[dict[str, Any]]:
        return self._records(SQL_LIST_REQUESTS, window.params(correlation_id=correlation_id, limit=limit))

    def latency(self, window: Window) -> list[dict[str, Any]]:
        result = []
        for stage, count, quantiles in self.db.query(SQL_LATENCY, window.params()):
            p50, p95, p99 = (_number(q) for q in quantiles)
            result.append({"stage": stage, "count": int(count), "p50": p50, "p95": p95, "p99": p99})
        return result

    def traffic(self, window: Window, *, bucket_s: int) -> dict[str, Any]:
        params = window.params(bucket=bucket_s)
        buckets = [
            {
                "start_s": int(b),
                "requests": int(n),
                "failed": int(failed),
                "prompt_tokens": int(pt),
                "completion_tokens": int(ct),
                "answered": int(answered),
                "empty": int(empty),
            }
            for b, n, failed, pt, ct, answered, empty in self.db.query(SQL_TRAFFIC_BUCKETS, params)
        ]
        models = [
            {
                "model_name": name,
                "model_version": version,
                "requests": int(n),
                "prompt_tokens": int(pt),
                "completion_tokens": int(ct),
                "failed": int(failed),
            }
            for name, version, n, pt, ct, failed in self.db.query(SQL_TRAFFIC_MODELS, params)
        ]
        failures = {reason: int(n) for reason, n in self.db.query(SQL_FAILURES, params)}
        return {"buckets": buckets, "models": models, "failures": failures}

    def groundedness_trend(self, window: Window, *, bucket_s: int) -> list[dict[str, Any]]:
        return [
            {"start_s": int(b), "scored": int(n), "mean": _number(mean), "min": _number(low)}
            for b, n, mean, low in self.db.query(SQL_GROUNDEDNESS_TREND, window.params(bucket=bucket_s))
        ]

    def worst_grounded(self, window: Window, *, limit: int) -> list[dict[str, Any]]:
        return self._records(SQL_WORST_GROUNDED, window.params(limit=limit))

    def feedback_summary(self, window: Window) -> dict[str, Any]:
        def counts(values: Sequence[Any]) -> dict[str, Any]:
            total, up, down, mean, rated, corrections = values
            return {
                "total": int(total),
                "up": int(up),
                "down": int(down),
                "mean_rating": _number(mean),
                "rated": int(rated),
                "corrections": int(corrections),
            }

        params = window.params()
        [total] = self.db.query(SQL_FEEDBACK_TOTAL, params) or [(0, 0, 0, 0.0, 0, 0)]
        models = [
            {
                "model_name": row[0],
                "model_version": row[1],
                "prompt_template_version": row[2],
                **counts(row[3:]),
            }
            for row in self.db.query(SQL_FEEDBACK_BY_MODEL, params)
        ]
        return {"total": counts(total), "models": models}

    def count_rows(self, table: str) -> int:
        """Rows of a table as reads see them (FINAL: after deduplication)."""
        if table not in {*TABLE_COLUMNS, "requests_per_minute"}:
            raise ValueError(f"unknown table {table}")
        final = "" if table == "requests_per_minute" else " FINAL"
        [(count,)] = self.db.query(f"SELECT count() FROM {table}{final}")
        return int(count)

    def close(self) -> None:
        self.db.close()


class StoreRunner:
    """Runs MonitorStore calls on one worker thread (ClickHouse handles are not shared across threads),
    opening the connection on first use and again after it was lost."""

    def __init__(
        self,
        open_db: Callable[[], ClickHouse],
        retention: Retention,
        *,
        reconnect_interval_s: float = 2.0,
    ) -> None:
        self._open_db = open_db
        self._retention = retention
        self._reconnect_interval_s = reconnect_interval_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._store: MonitorStore | None = None
        self._last_attempt = float("-inf")
        self._last_error = ""
        # check-then-insert of request rows is one critical section across handlers
        self.requests_lock = asyncio.Lock()

    def _ensure(self) -> MonitorStore:
        if self._store is not None:
            return self._store
        now = time.monotonic()
        if now - self._last_attempt < self._reconnect_interval_s:
            raise ClickHouseUnavailable(f"ClickHouse still unavailable: {self._last_error}")
        self._last_attempt = now
        try:
            db = self._open_db()
        except ClickHouseUnavailable as exc:
            self._last_error = str(exc)
            raise
        try:
            store = MonitorStore(db, self._retention)
            store.create_schema()
        except ClickHouseUnavailable as exc:
            self._last_error = str(exc)
            db.close()
            raise
        self._store = store
        log.info("ClickHouse connected, schema ready")
        return store

    def _call(self, fn: Callable[[MonitorStore], T]) -> T:
        store = self._ensure()
        try:
            return fn(store)
        except ClickHouseUnavailable as exc:
            self._last_error = str(exc)
            raise

    async def run(self, fn: Callable[[MonitorStore], T]) -> T:
        """`fn(store)` on the ClickHouse thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    async def open(self) -> None:
        await self.run(lambda store: None)

    async def close(self) -> None:
        def close() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)
