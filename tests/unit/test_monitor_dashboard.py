"""The Grafana dashboard (deploy/grafana) runs against the monitor's real schema.

Each panel's SQL, with the ClickHouse plugin's macros expanded the way the plugin expands them, runs on
the embedded engine holding the monitor's tables and a few requests: a renamed column or table fails
here rather than on a dashboard.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from llmops.query.v1.events_pb2 import QueryAnswered, QueryFailed
from llmops.query.v1.query_pb2 import FailureReason, RetrievedChunk, StageTiming, TokenUsage

from services.monitor import domain
from services.monitor.redaction import RedactionPolicy
from services.monitor.store import MonitorStore
from shared.clickhouse import ChdbClickHouse
from shared.events import new_meta

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "llmops-monitor.json"
PLUGIN = "grafana-clickhouse-datasource"
TENANT = "dash"


def expand_macros(sql: str) -> str:
    """The plugin's macros as it expands them, for a 6-hour range and 60-second interval."""
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)",
        r"\1 >= toDateTime(now() - INTERVAL 6 HOUR) AND \1 <= toDateTime(now() + INTERVAL 1 HOUR)",
        sql,
    )
    sql = re.sub(r"\$__timeInterval\((\w+)\)", r"toStartOfInterval(toDateTime(\1), INTERVAL 60 second)", sql)
    sql = sql.replace("$__interval_s", "60")
    return sql.replace("${tenant}", TENANT).replace("$tenant", TENANT)


def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def panel_queries() -> list[tuple[str, str]]:
    return [(p["title"], t["rawSql"]) for p in dashboard()["panels"] for t in p["targets"]]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitorStore]:
    db = MonitorStore(ChdbClickHouse(tmp_path_factory.mktemp("dash-chdb")))
    db.create_schema()
    now = datetime.now(UTC)
    rows = []
    for i in range(6):
        event = QueryAnswered(
            meta=new_meta(tenant_id=TENANT, producer="generator"),
            question="q",
            answer="a",
            context=[RetrievedChunk(chunk_id="c", score=0.5)] if i else [],
            usage=TokenUsage(prompt_tokens=50, completion_tokens=5),
            model_name="tiny_llm",
            model_version="1",
            timings=[StageTiming(stage="generate", duration_ms=10.0 * (i + 1))],
        )
        rows.append(
            domain.answered_row(event, groundedness=i / 5, redaction=RedactionPolicy(), received_at=now)
        )
    failed = QueryFailed(
        meta=new_meta(tenant_id=TENANT, producer="r"), reason=FailureReason.FAILURE_REASON_INTERNAL
    )
    rows.append(domain.failed_row(failed, redaction=RedactionPolicy(), received_at=now))
    failed_in_generation = QueryFailed(  # after routing chose tiny_llm v1
        meta=new_meta(tenant_id=TENANT, producer="generator"),
        reason=FailureReason.FAILURE_REASON_UNAVAILABLE,
        model_name="tiny_llm",
        model_version="1",
    )
    rows.append(domain.failed_row(failed_in_generation, redaction=RedactionPolicy(), received_at=now))
    db.insert_requests(rows)
    yield db
    db.close()


def test_every_panel_uses_the_official_clickhouse_plugin() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == PLUGIN
    assert set(variables) == {"datasource", "tenant"}
    assert board["panels"], "the dashboard has no panels"
    for panel in board["panels"]:
        assert panel["datasource"]["type"] == PLUGIN, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["type"] == PLUGIN
            assert target["editorType"] == "sql" and target["rawSql"].strip()
            assert "${tenant}" in target["rawSql"], f"{panel['title']} is not scoped to the tenant"


def test_the_tenant_variable_query_runs(store: MonitorStore) -> None:
    variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "tenant")
    assert (TENANT,) in store.db.query(variable["query"])


@pytest.mark.parametrize(("title", "sql"), panel_queries(), ids=[t for t, _ in panel_queries()])
def test_panel_sql_runs_on_the_monitor_schema(store: MonitorStore, title: str, sql: str) -> None:
    assert "$" not in expand_macros(sql), f"unexpanded macro in {title}"
    store.db.query(expand_macros(sql))


def test_panels_show_the_stored_requests(store: MonitorStore) -> None:
    queries = dict(panel_queries())
    [(_, requests, failed)] = store.db.query(expand_macros(queries["Requests per minute"]))
    assert (int(requests), int(failed)) == (8, 2)
    [(_, model, error_rate)] = store.db.query(expand_macros(queries["Error rate by model version"]))
    assert (model, error_rate) == ("tiny_llm:1", pytest.approx(1 / 7))  # 6 answers + 1 failure on v1
    [(_, groundedness)] = store.db.query(expand_macros(queries["Groundedness (mean)"]))
    assert groundedness == pytest.approx(0.5)
    worst = store.db.query(expand_macros(queries["Worst-grounded answers"]))
    assert [row[2] for row in worst][:2] == [0.0, 0.2]
