"""The monitor's DDL and SQL on the embedded ClickHouse engine (chdb, in a temporary folder).

chdb allows one open path per process, so the module shares one engine and closes it at the end;
each test uses its own tenant.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from llmops.feedback.v1.events_pb2 import FeedbackRecorded, Verdict
from llmops.query.v1.events_pb2 import QueryAnswered, QueryFailed
from llmops.query.v1.query_pb2 import FailureReason, RetrievedChunk, StageTiming, TokenUsage

from services.monitor import domain
from services.monitor.redaction import RedactionPolicy
from services.monitor.store import MonitorStore, Retention, StoreRunner, Window
from shared.clickhouse import (
    ChdbClickHouse,
    ClickHouse,
    ClickHouseUnavailable,
    bind_parameters,
    settings_clause,
)
from shared.events import new_meta

NOW = datetime.now(UTC)
POLICY = RedactionPolicy("store", {"hashed": "hash"})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitorStore]:
    db = MonitorStore(ChdbClickHouse(tmp_path_factory.mktemp("chdb")), Retention(30, 7, 365))
    db.create_schema()
    db.create_schema()  # idempotent
    yield db
    db.close()


def window(tenant: str) -> Window:
    # From the clock, not NOW: events made during a test (feedback) carry the time they were made,
    # and a long session collects this module many minutes before it runs.
    now = datetime.now(UTC)
    return Window(
        tenant,
        int((now - timedelta(hours=1)).timestamp() * 1000),
        int((now + timedelta(minutes=5)).timestamp() * 1000),
    )


def answered_row(
    tenant: str,
    *,
    generate_ms: float = 100.0,
    groundedness: float | None = 1.0,
    chunks: int = 2,
    model_version: str = "1",
    correlation_id: str | None = None,
    at: datetime = NOW,
) -> dict[str, Any]:
    event = QueryAnswered(
        meta=new_meta(tenant_id=tenant, producer="generator", correlation_id=correlation_id),
        question="q?",
        answer="a.",
        context=[RetrievedChunk(chunk_id=f"c{i}", score=1.0 - i / 10) for i in range(chunks)],
        usage=TokenUsage(prompt_tokens=100, completion_tokens=10),
        model_name="tiny_llm",
        model_version=model_version,
        prompt_template_id="grounded_qa",
        prompt_template_version="v2",
        timings=[
            StageTiming(stage="embed", duration_ms=5.0),
            StageTiming(stage="generate", duration_ms=generate_ms),
        ],
    )
    event.meta.occurred_at.FromDatetime(at)
    return domain.answered_row(event, groundedness=groundedness, redaction=POLICY, received_at=at)


def failed_row(tenant: str, correlation_id: str | None = None, *, model_version: str = "") -> dict[str, Any]:
    """A failure; with `model_version` one from the generator after routing chose tiny_llm."""
    stage = "generator" if model_version else "retriever"
    event = QueryFailed(
        meta=new_meta(tenant_id=tenant, producer=stage, correlation_id=correlation_id),
        reason=FailureReason.FAILURE_REASON_UNAVAILABLE,
        detail="down",
        failed_stage=stage,
        model_name="tiny_llm" if model_version else "",
        model_version=model_version,
    )
    return domain.failed_row(event, redaction=POLICY, received_at=NOW)


def test_replayed_requests_are_stored_once_and_counted_once_in_the_rollup(store: MonitorStore) -> None:
    rows = [answered_row("replay") for _ in range(5)]
    assert len(store.insert_requests(rows)) == 5
    assert store.insert_requests(rows) == []  # the same events again
    store.insert_rows("requests", rows)  # even a raw re-insert: ReplacingMergeTree + FINAL
    assert len(store.list_requests(window("replay"))) == 5
    [(requests,)] = store.db.query(
        "SELECT sum(requests) FROM requests_per_minute WHERE tenant_id = {t:String}", {"t": "replay"}
    )
    assert int(requests) == 10  # 5 once through insert_requests + 5 raw: only the raw path double counts


def test_an_answer_replaces_a_failure_of_the_same_request_and_not_the_reverse(store: MonitorStore) -> None:
    cid = str(uuid.uuid4())
    assert len(store.insert_requests([failed_row("outcome", cid)])) == 1
    assert len(store.insert_requests([answered_row("outcome", correlation_id=cid)])) == 1
    assert store.insert_requests([failed_row("outcome", cid)]) == []
    [record] = store.list_requests(window("outcome"), correlation_id=cid)
    assert record["status"] == "answered"


def test_request_record_round_trip(store: MonitorStore) -> None:
    row = answered_row("roundtrip", groundedness=0.25)
    store.insert_requests([row])
    [record] = store.list_requests(window("roundtrip"))
    assert record["correlation_id"] == row["correlation_id"]
    assert record["event_id"] == row["event_id"]
    assert record["occurred_ms"] == domain.epoch_ms(row["occurred_at"])
    assert record["stage_ms"] == {"embed": 5.0, "generate": 100.0}
    assert record["total_ms"] == 105.0
    assert record["chunk_ids"] == ["c0", "c1"]
    assert record["chunk_scores"] == [pytest.approx(1.0), pytest.approx(0.9)]
    assert record["groundedness"] == 0.25
    assert (record["model_name"], record["prompt_template_version"]) == ("tiny_llm", "v2")


def test_window_and_tenant_bound_every_query(store: MonitorStore) -> None:
    store.insert_requests([answered_row("inside"), answered_row("inside", at=NOW - timedelta(hours=3))])
    store.insert_requests([answered_row("elsewhere")])
    assert len(store.list_requests(window("inside"))) == 1
    wide = Window("inside", window("inside").start_ms - 4 * 3600 * 1000, window("inside").end_ms)
    assert len(store.list_requests(wide)) == 2


def test_latency_percentiles_per_stage(store: MonitorStore) -> None:
    store.insert_requests([answered_row("latency", generate_ms=float(ms)) for ms in range(1, 101)])
    store.insert_requests([failed_row("latency")])  # failures have no stage timings
    stages = {s["stage"]: s for s in store.latency(window("latency"))}
    assert set(stages) == {"embed", "generate", "total"}
    assert stages["generate"]["count"] == 100
    assert stages["generate"]["p50"] == pytest.approx(50.5, abs=1)
    assert stages["generate"]["p95"] == pytest.approx(95, abs=1.5)
    assert stages["generate"]["p99"] == pytest.approx(99, abs=1.5)
    assert stages["total"]["p50"] == pytest.approx(55.5, abs=1)
    assert stages["embed"]["p99"] == 5.0


def test_traffic_tokens_errors_and_empty_retrievals(store: MonitorStore) -> None:
    store.insert_requests(
        [answered_row("traffic", model_version="1") for _ in range(3)]
        + [answered_row("traffic", model_version="2", chunks=0)]
        + [failed_row("traffic")]
    )
    data = store.traffic(window("traffic"), bucket_s=3600)
    assert sum(b["requests"] for b in data["buckets"]) == 5
    assert sum(b["failed"] for b in data["buckets"]) == 1
    assert sum(b["empty"] for b in data["buckets"]) == 1
    assert sum(b["prompt_tokens"] for b in data["buckets"]) == 400
    assert [(m["model_version"], m["requests"], m["completion_tokens"]) for m in data["models"]] == [
        ("1", 3, 30),
        ("2", 1, 10),
    ]
    assert data["failures"] == {"UNAVAILABLE": 1}
    # A failure before routing (the retriever's) belongs to no model version.
    assert all(m["failed"] == 0 for m in data["models"])


def test_error_rate_per_model_version_counts_failures_after_routing(store: MonitorStore) -> None:
    store.insert_requests(
        [answered_row("errors", model_version="1") for _ in range(3)]
        + [failed_row("errors", model_version="1")]
        + [answered_row("errors", model_version="2")]
        + [failed_row("errors", model_version="2") for _ in range(3)]
        + [failed_row("errors")]  # failed before generation: in the totals only
    )
    data = store.traffic(window("errors"), bucket_s=3600)
    assert [(m["model_name"], m["model_version"], m["requests"], m["failed"]) for m in data["models"]] == [
        ("tiny_llm", "1", 4, 1),
        ("tiny_llm", "2", 4, 3),
    ]
    assert sum(b["failed"] for b in data["buckets"]) == 5
    [(failed_v2,)] = store.db.query(
        "SELECT sum(failed) FROM requests_per_minute WHERE tenant_id = {t:String} AND model_version = '2'",
        {"t": "errors"},
    )
    assert int(failed_v2) == 3  # the per-minute rollup attributes them too
    record = next(
        r for r in store.list_requests(window("errors")) if r["status"] == "failed" and r["model_version"]
    )
    assert (record["model_name"], record["failed_stage"]) == ("tiny_llm", "generator")


def test_groundedness_trend_and_worst_grounded(store: MonitorStore) -> None:
    scores = [0.9, 0.1, 0.6, None, 0.3]
    store.insert_requests([answered_row("grounded", groundedness=g) for g in scores])
    [bucket] = store.groundedness_trend(window("grounded"), bucket_s=86400 * 7)
    assert bucket["scored"] == 4
    assert bucket["mean"] == pytest.approx(0.475)
    assert bucket["min"] == pytest.approx(0.1)
    worst = store.worst_grounded(window("grounded"), limit=2)
    assert [r["groundedness"] for r in worst] == [pytest.approx(0.1), pytest.approx(0.3)]


def test_feedback_summary_in_total_and_per_model_version(store: MonitorStore) -> None:
    v1, v2 = answered_row("fb", model_version="1"), answered_row("fb", model_version="2")
    store.insert_requests([v1, v2])

    def feedback(cid: str, verdict: int, rating: int = 0, correction: str = "") -> dict[str, Any]:
        event = FeedbackRecorded(
            meta=new_meta(tenant_id="fb", producer="gateway", correlation_id=cid),
            verdict=verdict,  # type: ignore[arg-type]
            rating=rating,
            correction=correction,
        )
        return domain.feedback_row(event, redaction=POLICY, received_at=NOW)

    rows = [
        feedback(v1["correlation_id"], Verdict.VERDICT_UP, 5),
        feedback(v1["correlation_id"], Verdict.VERDICT_UP, 4),
        feedback(v2["correlation_id"], Verdict.VERDICT_DOWN, 1, correction="better"),
        feedback(str(uuid.uuid4()), Verdict.VERDICT_DOWN),  # a request the monitor never saw
    ]
    store.insert_rows("feedback", rows)
    store.insert_rows("feedback", rows)  # replay
    summary = store.feedback_summary(window("fb"))
    assert summary["total"] == {
        "total": 4,
        "up": 2,
        "down": 2,
        "mean_rating": pytest.approx(10 / 3),
        "rated": 3,
        "corrections": 1,
    }
    by_version = {m["model_version"]: m for m in summary["models"]}
    assert (by_version["1"]["up"], by_version["1"]["mean_rating"]) == (2, pytest.approx(4.5))
    assert (by_version["2"]["down"], by_version["2"]["corrections"]) == (1, 1)


def test_hash_redaction_is_what_is_stored(store: MonitorStore) -> None:
    row = answered_row("hashed")
    store.insert_requests([row])
    [record] = store.list_requests(window("hashed"))
    assert record["question"].startswith("sha256:")
    assert record["redaction"] == "hash"


def test_every_table_has_a_ttl_and_dedupes(store: MonitorStore) -> None:
    for table in ("requests", "feedback", "ingest_events", "spans", "finetune_events", "requests_per_minute"):
        [(create,)] = store.db.query(f"SHOW CREATE TABLE {table}")
        assert "TTL" in create, table
        assert "ReplacingMergeTree" in create or table == "requests_per_minute", table


class FlakyClickHouse:
    """The real engine behind a switch: while `down`, every call fails like an unreachable server."""

    def __init__(self, inner: ClickHouse) -> None:
        self.inner = inner
        self.down = True

    def _check(self) -> None:
        if self.down:
            raise ClickHouseUnavailable("connection refused")

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        self._check()
        self.inner.command(sql, parameters)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self._check()
        return self.inner.query(sql, parameters)

    def insert(self, table: str, columns: Any, rows: Any, settings: Any = None) -> None:
        self._check()
        self.inner.insert(table, columns, rows, settings)

    def insert_protobuf(self, table: str, data: bytes, schema: str, message: str) -> None:
        self._check()
        self.inner.insert_protobuf(table, data, schema, message)

    def close(self) -> None:
        pass


async def test_runner_reports_unavailable_then_reconnects(store: MonitorStore) -> None:
    flaky = FlakyClickHouse(store.db)
    opened: list[int] = []

    def open_db() -> ClickHouse:
        opened.append(1)
        return flaky

    runner = StoreRunner(open_db, Retention(), reconnect_interval_s=0.05)
    row = answered_row("outage")
    with pytest.raises(ClickHouseUnavailable):
        await runner.run(lambda s: s.insert_requests([row]))
    with pytest.raises(ClickHouseUnavailable, match="still unavailable"):  # no reconnect storm
        await runner.run(lambda s: s.insert_requests([row]))
    assert len(opened) == 1
    flaky.down = False
    await asyncio.sleep(0.06)
    assert len(await runner.run(lambda s: s.insert_requests([row]))) == 1
    assert len(await runner.run(lambda s: s.list_requests(window("outage")))) == 1
    await runner.close()


@pytest.mark.parametrize(
    "value",
    ["plain", "quote ' back \\ tick ` tab \t newline \n", ["a'b", "c\\d", "é"], [], ["x", 1], 7, None],
)
def test_bind_parameters_write_what_clickhouse_connect_writes(value: Any) -> None:
    from clickhouse_connect.driver.binding import format_bind_value

    assert bind_parameters({"p": value}) == {"p": str(format_bind_value(value))}


def test_settings_clause_quotes_text_and_writes_numbers() -> None:
    assert settings_clause(None) == settings_clause({}) == ""
    assert settings_clause({"optimize_on_insert": 0, "format_schema": "/a b/it's.proto:M"}) == (
        " SETTINGS optimize_on_insert = 0, format_schema = '/a b/it\\'s.proto:M'"
    )


def test_columnar_insert_keeps_times_nulls_maps_and_arrays(store: MonitorStore) -> None:
    moment = datetime(2026, 11, 27, 3, 4, 5, 678_999, tzinfo=UTC)
    row = answered_row("columnar", groundedness=None, at=moment)
    assert len(store.insert_requests([row])) == 1
    [record] = store.db.query(
        "SELECT toUnixTimestamp64Milli(occurred_at), groundedness, stage_ms, chunk_ids, question "
        "FROM requests FINAL WHERE tenant_id = {t:String}",
        {"t": "columnar"},
    )
    assert record == (domain.epoch_ms(moment), None, {"embed": 5.0, "generate": 100.0}, ["c0", "c1"], "q?")
    assert domain.epoch_ms(moment) % 1000 == 678  # milliseconds truncated, as before
