"""The monitor's fast path (services/monitor/native.py) against its reference, the per-event path, on
the embedded ClickHouse engine: the same events give the same stored rows (groundedness, redaction,
versions and all), replays change nothing, and records the per-event path would reject are refused
with nothing stored.

chdb allows one open path per process, so the module shares one engine; the per-event rows and the
fast-path rows of an event are told apart by tenant ("<tenant>/python" and "<tenant>/fast").
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from llmops.query.v1.events_pb2 import QueryAnswered
from llmops.query.v1.query_pb2 import Citation, RetrievedChunk, SentenceSupport, StageTiming, TokenUsage

from services.generator.domain import answer_support
from services.monitor import domain, native
from services.monitor.quality import groundedness
from services.monitor.redaction import Mode, RedactionPolicy
from services.monitor.store import REQUEST_COLUMNS, MonitorStore
from shared.clickhouse import ChdbClickHouse
from shared.events import new_meta

MODES: dict[str, Mode] = {"store": "store", "hash": "hash", "drop": "drop"}
POLICY = RedactionPolicy(
    "store", {f"{base}/{path}": mode for base, mode in MODES.items() for path in ("python", "fast")}
)
# Words that test the text rules: plurals ("ies", "ss"), stop words that normalise to other words
# ("does" -> "doe", "this" -> "thi"), single letters and digits, non-ASCII letters and punctuation.
WORDS = [
    "kafka",
    "stores",
    "topics",
    "partitions",
    "offsets",
    "cities",
    "city",
    "buses",
    "bus",
    "process",
    "processes",
    "ties",
    "tie",
    "does",
    "doe",
    "this",
    "thi",
    "yours",
    "a",
    "i",
    "7",
    "x",
    "42",
    "v2",
    "naïve",
    "café",
    "straße",
    "über",
    "log",
    "logs",
    "replicas",
    "leader",
    "election",
    "—",
    "“quoted”",
    "e.g.",
    "it's",
    "don't",
    "ISR",
    "acks=all",
    "min.insync.replicas",
]
NOW_NS = time.time_ns()
SEPARATORS = (
    " ",
    " ",
    " ",
    ", ",
    ". ",
    "! ",
    "? ",
    "\n",
    " .",
    " [1] ",
    "[2, 3]. ",
    "\u00a0",
    ".\u2003",
    "; ",
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitorStore]:
    db = MonitorStore(ChdbClickHouse(tmp_path_factory.mktemp("chdb")))
    db.create_schema()
    yield db
    db.close()


@pytest.fixture(scope="module")
def statements() -> native.AnsweredStatements:
    return native.AnsweredStatements.build(POLICY, 0.6, REQUEST_COLUMNS)


def text(rng: random.Random, words: int) -> str:
    parts = []
    for _ in range(words):
        parts.append(rng.choice(WORDS))
        parts.append(rng.choice(SEPARATORS))
    return "".join(parts).strip()


def corpus_event(rng: random.Random, tenant: str, i: int) -> QueryAnswered:
    chunks = [text(rng, rng.randint(0, 40)) for _ in range(rng.randint(0, 4))]
    # Answers partly copied from the chunks (supported sentences), partly made up.
    pieces = [
        rng.choice(chunks)[: rng.randint(0, 120)] if chunks and rng.random() < 0.6 else "" for _ in range(2)
    ]
    answer = " ".join([*pieces, text(rng, rng.randint(0, 12))]).strip()
    event = QueryAnswered(
        meta=new_meta(tenant_id=tenant, producer="generator"),
        question=text(rng, 8),
        answer=answer,
        citations=[Citation(marker=1, chunk_id=f"c{i}-0")] if chunks else [],
        context=[
            RetrievedChunk(chunk_id=f"c{i}-{k}", document_id=f"d{k}", text=t, score=rng.random())
            for k, t in enumerate(chunks)
        ],
        usage=TokenUsage(prompt_tokens=rng.randint(0, 4000), completion_tokens=rng.randint(0, 300)),
        model_name="tiny_llm",
        model_version=str(rng.randint(1, 3)),
        prompt_template_id="grounded_qa",
        prompt_template_version="v2",
        timings=[
            StageTiming(stage=stage, duration_ms=rng.random() * 100)
            for stage in rng.sample(
                ["embed", "retrieve", "queue", "first_token", "generate", "generate", ""], 5
            )
        ],
    )
    # Within the last day (the tables' TTL drops older rows), to the nanosecond.
    event.meta.occurred_at.FromNanoseconds(NOW_NS - rng.randint(0, 86_400 * 10**9))
    # A third judged by the generator, a third with support as any producer might send it (sentences
    # without words, more words in context than in the sentence), a third for the monitor to judge.
    kind = rng.randrange(3)
    if kind == 0:
        with_generator_support(event)
    elif kind == 1:
        event.sentence_support.extend(
            SentenceSupport(content_words=rng.randint(0, 6), words_in_context=rng.randint(0, 7))
            for _ in range(rng.randint(1, 4))
        )
    return event


def with_generator_support(event: QueryAnswered) -> QueryAnswered:
    """`event` with the sentence support the generator sends (services/generator/domain.py)."""
    del event.sentence_support[:]
    event.sentence_support.extend(answer_support(event.answer, event.context))
    return event


def with_tenant(event: QueryAnswered, tenant: str) -> QueryAnswered:
    copy = QueryAnswered()
    copy.CopyFrom(event)
    copy.meta.tenant_id = tenant
    return copy


def python_path(store: MonitorStore, events: list[QueryAnswered]) -> list[domain.Row]:
    received = datetime.now(UTC)
    rows = [
        domain.scored_answered_row(e, redaction=POLICY, received_at=received, support_threshold=0.6)
        for e in events
    ]
    return store.insert_requests(rows)


def fast_path(
    store: MonitorStore, statements: native.AnsweredStatements, events: list[QueryAnswered]
) -> list[Any]:
    return native.store_answered(store.db, statements, native.frame(e.SerializeToString() for e in events))


def stored(store: MonitorStore, tenant: str) -> dict[str, dict[str, Any]]:
    """The tenant's rows as both engines return them, by correlation id (times as epoch ms)."""
    select = ", ".join(
        "toUnixTimestamp64Milli(occurred_at)" if c == "occurred_at" else c for c in REQUEST_COLUMNS
    )
    rows = store.db.query(
        f"SELECT {select} FROM requests FINAL WHERE tenant_id = {{t:String}}", {"t": tenant}
    )
    result = {}
    for row in rows:
        record = dict(zip(REQUEST_COLUMNS, row, strict=True))
        record.pop("tenant_id")
        result[record["correlation_id"]] = record
    return result


@pytest.mark.parametrize("mode", list(MODES))
def test_the_fast_path_stores_what_the_per_event_path_stores(
    store: MonitorStore, statements: native.AnsweredStatements, mode: str
) -> None:
    rng = random.Random(f"corpus-{mode}")
    events = [corpus_event(rng, mode, i) for i in range(300)]
    python_path(store, [with_tenant(e, f"{mode}/python") for e in events])
    samples = fast_path(store, statements, [with_tenant(e, f"{mode}/fast") for e in events])

    expected, actual = stored(store, f"{mode}/python"), stored(store, f"{mode}/fast")
    assert len(actual) == len(expected) == len(events)
    for correlation_id, row in expected.items():
        assert actual[correlation_id] == row, correlation_id
    scores = [row["groundedness"] for row in expected.values()]
    # The corpus exercises every outcome: unjudged (None), unsupported, partly and fully supported.
    assert None in scores and 0.0 in scores and 1.0 in scores and any(0 < (s or 0) < 1 for s in scores)
    if mode != "store":  # the text is hashed or dropped, never stored as it came
        assert all(actual[e.meta.correlation_id]["answer"] != e.answer for e in events if e.answer)
    # The quality windows get one sample per stored row, with the row's values.
    assert len(samples) == len(events)
    by_time = {row["occurred_at"]: row for row in actual.values()}
    for tenant, sample in samples:
        row = by_time[round(sample.at * 1000)]
        assert tenant == f"{mode}/fast"
        assert (sample.groundedness, sample.empty_retrieval) == (row["groundedness"], not row["chunk_ids"])


def test_the_support_the_generator_sends_gives_the_score_the_monitor_would_give(
    store: MonitorStore, statements: native.AnsweredStatements
) -> None:
    rng = random.Random("support")
    tenant = f"support-{uuid.uuid4().hex[:6]}"
    events = [corpus_event(rng, tenant, i) for i in range(200)]
    paths: dict[str, Callable[[list[QueryAnswered]], object]] = {
        "python": lambda batch: python_path(store, batch),
        "fast": lambda batch: fast_path(store, statements, batch),
    }
    for path, store_batch in paths.items():
        judged_here = [with_tenant(e, f"{tenant}/{path}/text") for e in events]
        for event in judged_here:
            del event.sentence_support[:]
        sent = [with_generator_support(with_tenant(e, f"{tenant}/{path}/sent")) for e in events]
        assert sum(bool(e.sentence_support) for e in sent) > 100  # most answers have judged sentences
        store_batch(judged_here)
        store_batch(sent)
        by_text, by_support = stored(store, f"{tenant}/{path}/text"), stored(store, f"{tenant}/{path}/sent")
        assert len(by_text) == len(by_support) == len(events)
        scores = {k: r["groundedness"] for k, r in by_text.items()}
        assert {k: r["groundedness"] for k, r in by_support.items()} == scores, path
        assert len(set(scores.values())) > 3  # unjudged, unsupported, partly and fully supported


class _Recording:
    """A ClickHouse handle that records the statements it runs."""

    def __init__(self, inner: ChdbClickHouse) -> None:
        self.inner = inner
        self.commands: list[str] = []

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        self.commands.append(sql)
        self.inner.command(sql, parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_batch_judged_by_its_producer_skips_the_text_branch_and_stores_the_same_rows(
    store: MonitorStore, statements: native.AnsweredStatements
) -> None:
    rng = random.Random("judged")
    tenant = f"judged-{uuid.uuid4().hex[:6]}"
    events = [with_generator_support(corpus_event(rng, tenant, i)) for i in range(300)]
    judged = [e for e in events if e.sentence_support]
    assert len(judged) > 100
    recording = _Recording(store.db)  # type: ignore[arg-type]
    framed = native.frame(with_tenant(e, f"{tenant}/fast").SerializeToString() for e in judged)
    assert len(native.store_answered(recording, statements, framed)) == len(judged)
    assert statements.rows_judged in recording.commands and statements.rows not in recording.commands
    python_path(store, [with_tenant(e, f"{tenant}/python") for e in judged])
    assert stored(store, f"{tenant}/fast") == stored(store, f"{tenant}/python")
    # One answer without support in the batch brings the text branch back.
    recording.commands.clear()
    unjudged = with_tenant(events[0], f"{tenant}/mixed")
    del unjudged.sentence_support[:]
    mixed = [unjudged, *(with_tenant(e, f"{tenant}/mixed") for e in judged[:5])]
    native.store_answered(recording, statements, native.frame(e.SerializeToString() for e in mixed))
    assert statements.rows in recording.commands


def test_replays_and_older_answers_change_nothing_and_the_newest_wins(
    store: MonitorStore, statements: native.AnsweredStatements
) -> None:
    tenant = f"replay-{uuid.uuid4().hex[:6]}"
    rng = random.Random(7)
    first = [corpus_event(rng, tenant, i) for i in range(5)]
    assert len(fast_path(store, statements, first)) == 5
    assert fast_path(store, statements, first) == []  # a replay stores nothing new

    # A later answer to the first request (a re-published answer) replaces it; an earlier one does not;
    # in one batch, the newest of a request's answers is the one stored.
    later, earlier, newest = (with_tenant(first[0], tenant) for _ in range(3))
    for event, shift_s in ((later, 60), (earlier, -60), (newest, 120)):
        event.meta.event_id = str(uuid.uuid4())
        event.meta.occurred_at.FromSeconds(first[0].meta.occurred_at.seconds + shift_s)
    [(_, sample)] = fast_path(store, statements, [later, newest, earlier])
    rows = stored(store, tenant)
    assert len(rows) == 5
    assert rows[first[0].meta.correlation_id]["event_id"] == newest.meta.event_id
    assert sample.at == newest.meta.occurred_at.seconds


def test_an_answer_without_a_time_gets_the_time_it_was_stored(
    store: MonitorStore, statements: native.AnsweredStatements
) -> None:
    tenant = f"untimed-{uuid.uuid4().hex[:6]}"
    event = corpus_event(random.Random(3), tenant, 0)
    event.meta.ClearField("occurred_at")
    before = datetime.now(UTC).timestamp()
    [(_, sample)] = fast_path(store, statements, [event])
    assert before - 1 <= sample.at <= datetime.now(UTC).timestamp() + 1


def _count(store: MonitorStore) -> int:
    """Stored requests (FINAL: a background merge may collapse replaced rows at any time)."""
    return store.count_rows("requests")


def _not_protobuf(event: QueryAnswered) -> bytes:
    return b"\x0a\xff\xff\xff\x0f garbage"


def _bad_event_id(event: QueryAnswered) -> bytes:
    event.meta.event_id = "not-a-uuid"
    return event.SerializeToString()


def _no_tenant(event: QueryAnswered) -> bytes:
    event.meta.tenant_id = ""
    return event.SerializeToString()


def _bad_time(event: QueryAnswered) -> bytes:
    event.meta.occurred_at.nanos = -5
    return event.SerializeToString()


def _invalid_utf8(event: QueryAnswered) -> bytes:
    """The event with a chunk's source_uri made invalid UTF-8 (a proto3 string must be valid)."""
    event.context[0].source_uri = "XXXX"
    return event.SerializeToString().replace(b"XXXX", b"\xff\xfe\xfd\xfc")


@pytest.mark.parametrize("spoil", [_not_protobuf, _bad_event_id, _no_tenant, _bad_time, _invalid_utf8])
def test_a_batch_with_a_record_the_per_event_path_rejects_is_refused_whole(
    store: MonitorStore, statements: native.AnsweredStatements, spoil: Callable[[QueryAnswered], bytes]
) -> None:
    rng = random.Random(11)
    tenant = f"refused-{uuid.uuid4().hex[:6]}"
    good = [corpus_event(rng, tenant, i) for i in range(3)]
    bad = corpus_event(rng, tenant, 3)
    while not bad.context:
        bad = corpus_event(rng, tenant, 3)
    before = _count(store)
    framed = native.frame([*(e.SerializeToString() for e in good), spoil(bad)])
    with pytest.raises(native.Refused):
        native.store_answered(store.db, statements, framed)
    assert _count(store) == before
    # The engine is left ready for the next batch.
    assert len(fast_path(store, statements, good)) == 3


def test_salted_hashing_stays_out_of_sql(store: MonitorStore) -> None:
    policy = RedactionPolicy("store", {"salted": "hash"}, salt=b"a secret salt")
    statements = native.AnsweredStatements.build(policy, 0.6, REQUEST_COLUMNS)
    assert "a secret salt" not in statements.rows + statements.rows_judged
    event = corpus_event(random.Random(5), "salted", 0)
    with pytest.raises(native.Refused, match="salted"):
        fast_path(store, statements, [event])
    # Other tenants of that policy still take the fast path.
    assert len(fast_path(store, statements, [corpus_event(random.Random(5), "plain", 0)])) == 1


def test_the_schema_names_every_field_of_the_event() -> None:
    schema = native.protobuf_schema(QueryAnswered.DESCRIPTOR)
    assert "import" not in schema
    for field in QueryAnswered.DESCRIPTOR.fields:
        assert f" {field.name} = {field.number};" in schema
    columns = dict(native.staging_columns(QueryAnswered.DESCRIPTOR))
    assert columns["meta_occurred_at_seconds"] == "Int64"
    assert columns["context"].startswith("Nested(") and "metadata Map(String, String)" in columns["context"]


def test_fields_a_newer_producer_adds_are_skipped(
    store: MonitorStore, statements: native.AnsweredStatements
) -> None:
    tenant = f"newer-{uuid.uuid4().hex[:6]}"
    event = corpus_event(random.Random(9), tenant, 0)
    # Field 99 (a string) and field 100 (a varint), unknown to this version of QueryAnswered.
    newer = event.SerializeToString() + b"\x9a\x06\x03abc" + b"\xa0\x06\x05"
    [(_, sample)] = native.store_answered(store.db, statements, native.frame([newer]))
    [row] = stored(store, tenant).values()
    assert row["event_id"] == event.meta.event_id
    assert sample.groundedness == groundedness(event.answer, [c.text for c in event.context])
