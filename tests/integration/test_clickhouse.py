"""The embedded ClickHouse engine (chdb) runs the platform's DDL and SQL for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.clickhouse import ChdbClickHouse, open_clickhouse

pytestmark = pytest.mark.integration

DDL = """
CREATE TABLE IF NOT EXISTS spans (
    event_id String, tenant_id LowCardinality(String), stage LowCardinality(String),
    duration_ms Float64, occurred_at DateTime64(3)
) ENGINE = ReplacingMergeTree ORDER BY (tenant_id, event_id)
"""


def test_embedded_engine_dedupes_by_event_id_and_persists(tmp_path: Path) -> None:
    db = open_clickhouse("", tmp_path / "ch")
    assert isinstance(db, ChdbClickHouse)
    db.command(DDL)
    rows = [
        ("e1", "t-a", "embed", 3.5, "2026-11-27 00:00:00.000"),
        ("e2", "t-a", "generate", 120.0, "2026-11-27 00:00:01.000"),
        ("e1", "t-a", "embed", 3.5, "2026-11-27 00:00:00.000"),
    ]  # a replayed event
    db.insert("spans", ["event_id", "tenant_id", "stage", "duration_ms", "occurred_at"], rows)
    result = db.query(
        "SELECT stage, count() FROM spans FINAL WHERE tenant_id = {t:String} GROUP BY stage ORDER BY stage",
        {"t": "t-a"},
    )
    assert result == [("embed", 1), ("generate", 1)]
    db.close()

    reopened = ChdbClickHouse(tmp_path / "ch")
    assert reopened.query("SELECT count() FROM spans FINAL") == [(2,)]
    reopened.close()


def test_nan_and_infinities_are_stored_as_such_not_as_zero(tmp_path: Path) -> None:
    """JSON has no NaN: written as null, a Float64 would store 0 (a diverged job's loss read as perfect)."""
    db = ChdbClickHouse(tmp_path / "ch")
    db.command(
        "CREATE TABLE m (id String, loss Float64, scores Array(Float64), metrics Map(String, Float64))"
        " ENGINE = MergeTree ORDER BY id"
    )
    nan, inf = float("nan"), float("inf")
    rows = [
        ("a", nan, [0.5, -inf], {"eval_loss": nan, "f1": 0.25}),
        ("b", 1.5, [0.5, 0.25], {"eval_loss": 2.0}),
    ]
    db.insert("m", ["id", "loss", "scores", "metrics"], rows)
    got = db.query(
        "SELECT id, isNaN(loss), toString(scores), isNaN(metrics['eval_loss']), metrics['f1'], loss "
        "FROM m ORDER BY id"
    )
    assert got[0][:5] == ("a", 1, "[0.5,-inf]", 1, 0.25)
    assert got[1] == ("b", 0, "[0.5,0.25]", 0, 0.0, 1.5)
    db.close()


def test_insert_settings_apply_to_the_insert(tmp_path: Path) -> None:
    """The monitor inserts rows it has made one per key with optimize_on_insert = 0: the engine then
    keeps the block as given (a duplicate stays until a merge, and FINAL still reads one)."""
    db = ChdbClickHouse(tmp_path / "ch")
    db.command(DDL)
    columns = ["event_id", "tenant_id", "stage", "duration_ms", "occurred_at"]
    twice = [("e1", "t-a", "embed", 3.5, "2026-11-27 00:00:00.000")] * 2
    db.insert("spans", columns, twice)
    db.insert("spans", columns, twice, {"optimize_on_insert": 0})
    parts = db.query(
        "SELECT rows FROM system.parts WHERE table = 'spans' AND active ORDER BY modification_time"
    )
    assert sorted(rows for (rows,) in parts) == [1, 2]
    assert db.query("SELECT count() FROM spans FINAL") == [(1,)]
    db.close()
