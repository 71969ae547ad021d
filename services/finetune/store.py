"""The finetune's local state in one SQLite file: what it needs of answers and feedback, alerts, jobs
and dataset versions.

Answers and feedback are keyed by (tenant_id, correlation_id), so feedback can only ever join the
answer of its own tenant. Text is stored PII-scrubbed (`services.finetune.pii`) and the context is
cut to the first `max_context_chunks` passages: the store never holds more than curation needs.
Writes are idempotent (INSERT OR REPLACE on the natural keys), so a redelivered event changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.finetune.curation import Answered, Feedback
from services.finetune.triggers import PendingAlert

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
  tenant_id TEXT NOT NULL, correlation_id TEXT NOT NULL, question TEXT NOT NULL, answer TEXT NOT NULL,
  context TEXT NOT NULL, groundedness REAL, occurred_ms INTEGER NOT NULL, model_name TEXT NOT NULL,
  model_version TEXT NOT NULL, PRIMARY KEY (tenant_id, correlation_id));
CREATE TABLE IF NOT EXISTS feedback (
  tenant_id TEXT NOT NULL, correlation_id TEXT NOT NULL, event_id TEXT NOT NULL, verdict INTEGER NOT NULL,
  rating INTEGER NOT NULL, correction TEXT NOT NULL, occurred_ms INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, correlation_id, event_id));
CREATE TABLE IF NOT EXISTS alerts (
  event_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, signal TEXT NOT NULL, observed REAL NOT NULL,
  threshold REAL NOT NULL, at_ms INTEGER NOT NULL, consumed_by TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS tenants (
  tenant_id TEXT PRIMARY KEY, first_seen_ms INTEGER NOT NULL, examples_at_last_job INTEGER NOT NULL DEFAULT 0,
  last_job_ms INTEGER);
CREATE TABLE IF NOT EXISTS jobs (
  job_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, state INTEGER NOT NULL, trigger INTEGER NOT NULL,
  trigger_detail TEXT NOT NULL, base_model TEXT NOT NULL, dataset_version TEXT NOT NULL,
  parameters TEXT NOT NULL, metrics TEXT NOT NULL, artifact_uri TEXT NOT NULL, error TEXT NOT NULL,
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant_id, created_ms);
CREATE TABLE IF NOT EXISTS datasets (
  tenant_id TEXT NOT NULL, version TEXT NOT NULL, parent_version TEXT NOT NULL,
  train_examples INTEGER NOT NULL, eval_examples INTEGER NOT NULL, sources TEXT NOT NULL,
  uri TEXT NOT NULL, created_ms INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, version));
CREATE TABLE IF NOT EXISTS model_versions (
  model_name TEXT NOT NULL, version INTEGER NOT NULL, state TEXT NOT NULL, traffic_share REAL NOT NULL,
  job_id TEXT NOT NULL, tenant_id TEXT NOT NULL, adapter_dir TEXT NOT NULL, reason TEXT NOT NULL,
  promoted_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
  PRIMARY KEY (model_name, version));
"""

# Serving states of a model version (ModelVersionRecord.state).
STABLE, CANARY, SUPERSEDED, ROLLED_BACK, FAILED = "stable", "canary", "superseded", "rolled_back", "failed"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class JobRecord:
    job_id: str
    tenant_id: str
    state: int
    trigger: int
    trigger_detail: str
    base_model: str
    dataset_version: str
    parameters: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifact_uri: str = ""
    error: str = ""
    created_ms: int = 0
    updated_ms: int = 0  # last change; for a canary: when its current traffic share began


@dataclass(frozen=True)
class DatasetRecord:
    tenant_id: str
    version: str
    parent_version: str
    train_examples: int
    eval_examples: int
    sources: dict[str, int]
    uri: str
    created_ms: int


@dataclass
class ModelVersionRecord:
    """A numbered version of the serving model in Triton's writable repository, and its rollout."""

    model_name: str
    version: int
    state: str  # STABLE, CANARY, SUPERSEDED, ROLLED_BACK or FAILED
    traffic_share: float
    job_id: str = ""  # "" for version 1 (the base model)
    tenant_id: str = ""  # whose curated data trained the adapter
    adapter_dir: str = ""  # "" for the base model
    reason: str = ""  # why it was rolled back or failed
    promoted_ms: int = 0
    updated_ms: int = 0  # last change; for a canary: when its current traffic share began


def _narrowed(query: str, tenant_id: str, correlation_id: str | None) -> tuple[str, tuple[str, ...]]:
    """`query` (filtered on tenant_id) further narrowed to one correlation id when one is given."""
    if correlation_id is None:
        return query, (tenant_id,)
    return f"{query} AND correlation_id = ?", (tenant_id, correlation_id)


class FinetuneStore:
    """Thread-safe (one connection behind a lock): curation reads it from a worker thread."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._conn:
            yield self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- events ---------------------------------------------------------------------------------

    def _touch_tenant(self, conn: sqlite3.Connection, tenant_id: str) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO tenants (tenant_id, first_seen_ms) VALUES (?, ?)", (tenant_id, now_ms())
        )

    def add_answers(self, answers: list[Answered]) -> None:
        with self._tx() as conn:
            for a in answers:
                self._touch_tenant(conn, a.tenant_id)
                conn.execute(
                    "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        a.tenant_id,
                        a.correlation_id,
                        a.question,
                        a.answer,
                        json.dumps(list(a.context)),
                        a.groundedness,
                        a.occurred_ms,
                        a.model_name,
                        a.model_version,
                    ),
                )

    def add_feedback(self, items: list[Feedback]) -> None:
        with self._tx() as conn:
            for f in items:
                self._touch_tenant(conn, f.tenant_id)
                conn.execute(
                    "INSERT OR REPLACE INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        f.tenant_id,
                        f.correlation_id,
                        f.event_id,
                        f.verdict,
                        f.rating,
                        f.correction,
                        f.occurred_ms,
                    ),
                )

    def add_alert(self, event_id: str, tenant_id: str, alert: PendingAlert) -> None:
        with self._tx() as conn:
            self._touch_tenant(conn, tenant_id)
            conn.execute(
                "INSERT OR IGNORE INTO alerts (event_id, tenant_id, signal, observed, threshold, at_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, tenant_id, alert.signal, alert.observed, alert.threshold, int(alert.at * 1000)),
            )

    def pending_alerts(self, tenant_id: str) -> list[PendingAlert]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT signal, observed, threshold, at_ms FROM alerts "
                "WHERE tenant_id = ? AND consumed_by = ''",
                (tenant_id,),
            ).fetchall()
        return [PendingAlert(s, o, t, at / 1000) for s, o, t, at in rows]

    def consume_alerts(self, tenant_id: str, job_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE alerts SET consumed_by = ? WHERE tenant_id = ? AND consumed_by = ''",
                (job_id, tenant_id),
            )

    def answers(self, tenant_id: str, correlation_id: str | None = None) -> list[Answered]:
        """The tenant's stored answers (only the one of `correlation_id` when given)."""
        query = (
            "SELECT tenant_id, correlation_id, question, answer, context, groundedness, occurred_ms, "
            "model_name, model_version FROM answers WHERE tenant_id = ?"
        )
        with self._tx() as conn:
            rows = conn.execute(*_narrowed(query, tenant_id, correlation_id)).fetchall()
        return [
            Answered(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6], r[7], r[8]) for r in rows
        ]

    def feedback(self, tenant_id: str, correlation_id: str | None = None) -> list[Feedback]:
        """The tenant's stored feedback (only that on `correlation_id` when given)."""
        with self._tx() as conn:
            rows = conn.execute(
                *_narrowed("SELECT * FROM feedback WHERE tenant_id = ?", tenant_id, correlation_id)
            ).fetchall()
        return [Feedback(*r) for r in rows]

    def prune(self, older_than_ms: int) -> int:
        """Forget answers and feedback older than the retention (datasets already written keep them)."""
        with self._tx() as conn:
            removed = conn.execute("DELETE FROM answers WHERE occurred_ms < ?", (older_than_ms,)).rowcount
            removed += conn.execute("DELETE FROM feedback WHERE occurred_ms < ?", (older_than_ms,)).rowcount
        return int(removed)

    # --- tenants ----------------------------------------------------------------------------------

    def tenants(self) -> list[tuple[str, int, int, int | None]]:
        """(tenant_id, first_seen_ms, examples_at_last_job, last_job_ms) of every tenant seen."""
        with self._tx() as conn:
            rows = conn.execute("SELECT * FROM tenants ORDER BY tenant_id").fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def mark_job_started(self, tenant_id: str, examples: int, at_ms: int) -> None:
        with self._tx() as conn:
            self._touch_tenant(conn, tenant_id)
            conn.execute(
                "UPDATE tenants SET examples_at_last_job = ?, last_job_ms = ? WHERE tenant_id = ?",
                (examples, at_ms, tenant_id),
            )

    # --- jobs ---------------------------------------------------------------------------------------

    def save_job(self, job: JobRecord) -> None:
        job.updated_ms = now_ms()
        job.created_ms = job.created_ms or job.updated_ms
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.job_id,
                    job.tenant_id,
                    job.state,
                    job.trigger,
                    job.trigger_detail,
                    job.base_model,
                    job.dataset_version,
                    json.dumps(job.parameters, sort_keys=True),
                    json.dumps(job.metrics, sort_keys=True),
                    job.artifact_uri,
                    job.error,
                    job.created_ms,
                    job.updated_ms,
                ),
            )

    @staticmethod
    def _job(row: Any) -> JobRecord:
        return JobRecord(
            job_id=row[0],
            tenant_id=row[1],
            state=row[2],
            trigger=row[3],
            trigger_detail=row[4],
            base_model=row[5],
            dataset_version=row[6],
            parameters=json.loads(row[7]),
            metrics=json.loads(row[8]),
            artifact_uri=row[9],
            error=row[10],
            created_ms=row[11],
            updated_ms=row[12],
        )

    def job(self, job_id: str) -> JobRecord | None:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def jobs(self, tenant_id: str = "", *, states: tuple[int, ...] = (), limit: int = 100) -> list[JobRecord]:
        query, args = "SELECT * FROM jobs WHERE 1=1", list[str | int]()
        if tenant_id:
            query += " AND tenant_id = ?"
            args.append(tenant_id)
        if states:
            query += f" AND state IN ({','.join('?' * len(states))})"
            args.extend(states)
        query += " ORDER BY created_ms DESC, job_id DESC LIMIT ?"
        args.append(limit)
        with self._tx() as conn:
            rows = conn.execute(query, args).fetchall()
        return [self._job(r) for r in rows]

    # --- datasets -------------------------------------------------------------------------------

    def save_dataset(self, record: DatasetRecord) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.tenant_id,
                    record.version,
                    record.parent_version,
                    record.train_examples,
                    record.eval_examples,
                    json.dumps(record.sources, sort_keys=True),
                    record.uri,
                    record.created_ms,
                ),
            )

    def datasets(self, tenant_id: str, limit: int = 100) -> list[DatasetRecord]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT * FROM datasets WHERE tenant_id = ? ORDER BY created_ms DESC, version LIMIT ?",
                (tenant_id, limit),
            ).fetchall()
        return [DatasetRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7]) for r in rows]

    def dataset(self, tenant_id: str, version: str) -> DatasetRecord | None:
        found = [d for d in self.datasets(tenant_id, limit=100_000) if d.version == version]
        return found[0] if found else None

    # --- model versions -------------------------------------------------------------------------

    def save_version(self, record: ModelVersionRecord) -> None:
        record.updated_ms = now_ms()
        record.promoted_ms = record.promoted_ms or record.updated_ms
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.model_name,
                    record.version,
                    record.state,
                    record.traffic_share,
                    record.job_id,
                    record.tenant_id,
                    record.adapter_dir,
                    record.reason,
                    record.promoted_ms,
                    record.updated_ms,
                ),
            )

    def versions(self, model_name: str, *, states: tuple[str, ...] = ()) -> list[ModelVersionRecord]:
        """The model's versions, newest first (optionally only those in `states`)."""
        query, args = "SELECT * FROM model_versions WHERE model_name = ?", [model_name]
        if states:
            query += f" AND state IN ({','.join('?' * len(states))})"
            args.extend(states)
        with self._tx() as conn:
            rows = conn.execute(query + " ORDER BY version DESC", args).fetchall()
        return [ModelVersionRecord(*r) for r in rows]

    def version(self, model_name: str, version: int) -> ModelVersionRecord | None:
        found = [v for v in self.versions(model_name) if v.version == version]
        return found[0] if found else None
