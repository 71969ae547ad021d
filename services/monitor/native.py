"""The monitor's fast path for answers: QueryAnswered records go into ClickHouse as they came, and the
engine builds their `requests` rows, groundedness included.

Python then only frames each batch's record values (length-delimited, FORMAT Protobuf); the ClickHouse
engine parses them (with a schema generated from the event's descriptor, so it follows proto/) and
runs, in SQL, what services/monitor/domain.py and quality.py do per event in Python: the row, the
redaction of question and answer, the version, and the groundedness score. The SQL gives the same
values as the Python path for the same event (tests/unit/test_monitor_native.py compares them over a
corpus), which stays the reference and takes over for a batch the fast path refuses (`Refused`):
records that are not valid events (unparseable, invalid metadata or text) so that they are
dead-lettered one by one, and tenants whose text is hashed with a salt, because the salt must not
appear in SQL (a server's query log keeps statements).

Groundedness in SQL follows quality.py's rule with one batch-level trick in place of its caches: the
content words of each distinct retrieved chunk text of the batch are computed once, as (chunk text
hash, word) pairs, and an answer word is in the context when one of its chunks holds the pair.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from llmops.query.v1.events_pb2 import QueryAnswered

from services.monitor.domain import ANSWERED, NESTED_STAGES, row_version
from services.monitor.quality import Sample
from services.monitor.redaction import RedactionPolicy
from shared.clickhouse import ClickHouse, ClickHouseUnavailable, sql_string
from shared.text import STOP_WORDS

STAGING_TABLE = "answered_staging"
ROWS_TABLE = "answered_rows"

_SCALAR_CLICKHOUSE = {
    FieldDescriptor.TYPE_DOUBLE: "Float64",
    FieldDescriptor.TYPE_FLOAT: "Float32",
    FieldDescriptor.TYPE_INT64: "Int64",
    FieldDescriptor.TYPE_UINT64: "UInt64",
    FieldDescriptor.TYPE_INT32: "Int32",
    FieldDescriptor.TYPE_FIXED64: "UInt64",
    FieldDescriptor.TYPE_FIXED32: "UInt32",
    FieldDescriptor.TYPE_BOOL: "UInt8",
    FieldDescriptor.TYPE_STRING: "String",
    FieldDescriptor.TYPE_BYTES: "String",
    FieldDescriptor.TYPE_UINT32: "UInt32",
    FieldDescriptor.TYPE_ENUM: "Int32",
    FieldDescriptor.TYPE_SFIXED32: "Int32",
    FieldDescriptor.TYPE_SFIXED64: "Int64",
    FieldDescriptor.TYPE_SINT32: "Int32",
    FieldDescriptor.TYPE_SINT64: "Int64",
}
_SCALAR_PROTO = {
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
    # enums travel as their number: an int32 on the wire, and an unknown value is kept, as in Python
    FieldDescriptor.TYPE_ENUM: "int32",
}


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and bool(field.message_type.GetOptions().map_entry)


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _local_name(message: Descriptor) -> str:
    return str(message.full_name).replace(".", "_")


def protobuf_schema(message: Descriptor) -> str:
    """A self-contained proto3 file for `message` (its message types renamed by full name, no imports),
    wire-compatible with the real one, for ClickHouse.insert_protobuf."""
    definitions: dict[str, str] = {}

    def define(descriptor: Descriptor) -> str:
        name = _local_name(descriptor)
        if name in definitions:
            return name
        definitions[name] = ""  # reserve first: recursive types
        lines = []
        for field in descriptor.fields:
            if _is_map(field):
                key, value = (
                    field.message_type.fields_by_name["key"],
                    field.message_type.fields_by_name["value"],
                )
                kind = f"map<{_proto_type(key, define)}, {_proto_type(value, define)}>"
            else:
                kind = ("repeated " if _is_repeated(field) else "") + _proto_type(field, define)
            lines.append(f"  {kind} {field.name} = {field.number};")
        definitions[name] = f"message {name} {{\n" + "\n".join(lines) + "\n}"
        return name

    define(message)
    return 'syntax = "proto3";\n\n' + "\n\n".join(definitions.values()) + "\n"


def _proto_type(field: FieldDescriptor, define: Callable[[Descriptor], str]) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return define(field.message_type)
    return _SCALAR_PROTO[field.type]


def staging_columns(message: Descriptor) -> list[tuple[str, str]]:
    """ClickHouse columns that take every field of `message` from FORMAT Protobuf: nested messages
    flattened as parent_child, repeated messages as Nested (one level), maps as Map."""

    def columns(descriptor: Descriptor, prefix: str, inside_repeated: bool) -> list[tuple[str, str]]:
        result: list[tuple[str, str]] = []
        for field in descriptor.fields:
            name = prefix + field.name
            if _is_map(field):
                entry = field.message_type
                key = _SCALAR_CLICKHOUSE[entry.fields_by_name["key"].type]
                value = _SCALAR_CLICKHOUSE[entry.fields_by_name["value"].type]
                result.append((name, f"Map({key}, {value})"))
            elif field.type == FieldDescriptor.TYPE_MESSAGE and _is_repeated(field):
                if inside_repeated:
                    raise ValueError(f"{field.full_name}: repeated messages nest one level only")
                inner = columns(field.message_type, "", True)
                result.append((name, "Nested(" + ", ".join(f"{n} {t}" for n, t in inner) + ")"))
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                result.extend(columns(field.message_type, name + "_", inside_repeated))
            else:
                kind = _SCALAR_CLICKHOUSE[field.type]
                result.append((name, f"Array({kind})" if _is_repeated(field) else kind))
        return result

    return columns(message, "", False)


def string_checks(message: Descriptor) -> list[str]:
    """SQL conditions that hold when every string field of a staged row is valid UTF-8, as the Python
    protobuf runtime requires of a proto3 string (it rejects the event otherwise)."""

    def checks(descriptor: Descriptor, prefix: str, array_depth: int) -> list[str]:
        result: list[str] = []
        for field in descriptor.fields:
            name = prefix + field.name
            if _is_map(field):
                for part, strings in (("key", "mapKeys"), ("value", "mapValues")):
                    if field.message_type.fields_by_name[part].type == FieldDescriptor.TYPE_STRING:
                        if array_depth:  # a map in each element of a Nested column
                            result.append(
                                f"arrayAll(m -> arrayAll(s -> isValidUTF8(s), {strings}(m)), {name})"
                            )
                        else:
                            result.append(f"arrayAll(s -> isValidUTF8(s), {strings}({name}))")
            elif field.type == FieldDescriptor.TYPE_MESSAGE and _is_repeated(field):
                result.extend(checks(field.message_type, name + ".", 1))
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                result.extend(checks(field.message_type, name + "_", array_depth))
            elif field.type == FieldDescriptor.TYPE_STRING:
                depth = array_depth + (1 if _is_repeated(field) else 0)
                result.append(f"arrayAll(s -> isValidUTF8(s), {name})" if depth else f"isValidUTF8({name})")
        return result

    return checks(message, "", 0)


# --- the text rules of shared/text.py in SQL --------------------------------------------------------

# Python's \s on str: ASCII white space including \x1c-\x1f, NEL, and the Unicode separators.
_SPACE = r"[\t\n\v\f\r \x1c-\x1f\x{85}\p{Z}]"
_SENTENCE_BREAK = rf"[.!?]{_SPACE}+|\n+"
_CITATION_MARKER = rf"\[\p{{Nd}}+(?:{_SPACE}*,{_SPACE}*\p{{Nd}}+)*\]"
_STOP_WORDS = "(" + ", ".join(map(sql_string, sorted(STOP_WORDS))) + ")"


_LETTERS_AND_DIGITS = sql_string(r"[\p{L}\p{N}]+")
_SPACE_BEFORE_PUNCTUATION = sql_string(r"[ \t]+([.!?,;:])")


def tokens_sql(text: str) -> str:
    """shared.text.tokens of lower(text): runs of letters and digits (split on anything else)."""
    return (
        f"if(isValidASCII({text}), splitByNonAlpha(lower({text})), "
        f"extractAll(lowerUTF8({text}), {_LETTERS_AND_DIGITS}))"
    )


def content_word_sql(token: str) -> str:
    """shared.text's content word of a token: '' for a stop word or a single letter, else normalised
    (a plural "ies" becomes "y", a final "s" but not "ss" is removed)."""
    n = f"lengthUTF8({token})"
    return (
        f"if({token} IN {_STOP_WORDS} OR ({n} = 1 AND NOT match({token}, '^[0-9]$')), '', multiIf("
        f"{n} > 4 AND endsWith({token}, 'ies'), concat(substringUTF8({token}, 1, {n} - 3), 'y'), "
        f"{n} > 3 AND endsWith({token}, 's') AND NOT endsWith({token}, 'ss'), "
        f"substringUTF8({token}, 1, {n} - 1), {token}))"
    )


def content_words_sql(text: str) -> str:
    """Distinct content words of a text (shared.text.content_word_set)."""
    words = f"arrayMap(t -> {content_word_sql('t')}, {tokens_sql(text)})"
    return f"arrayDistinct(arrayFilter(w -> w != '', {words}))"


def sentence_words_sql(answer: str) -> str:
    """shared.text.sentence_word_sets: the content words of each sentence that has some."""
    cleaned = (
        f"replaceRegexpAll(replaceRegexpAll({answer}, {sql_string(_CITATION_MARKER)}, ''), "
        f"{_SPACE_BEFORE_PUNCTUATION}, '\\\\1')"
    )
    pieces = f"splitByRegexp({sql_string(_SENTENCE_BREAK)}, {cleaned})"
    return f"arrayFilter(s -> notEmpty(s), arrayMap(p -> {content_words_sql('p')}, {pieces}))"


# QueryAnswered.sentence_support as staged columns (the generator's counts per answer sentence)
_SUPPORT_WORDS = "sentence_support.content_words"
_SUPPORT_IN_CONTEXT = "sentence_support.words_in_context"


def groundedness_sql(texts: str, staging: str, support_threshold: float, *, judge_text: bool = True) -> str:
    """The answer's groundedness score (services/monitor/domain.py's scored_answered_row): from the
    sentence support the event carries (quality.judge_support), else, with `judge_text`, judged from
    the text (quality.judge_groundedness) over the row's `sentences` (sentence_words_sql of the answer)
    and `hashes` (cityHash64 of each of its chunk texts, `texts`); the chunks' words come from one set
    per query, of the answers that carry no support. NULL when no sentence is judged."""
    threshold = repr(float(support_threshold))
    judged = f"arrayCount(n -> n > 0, {_SUPPORT_WORDS})"
    # NULL for an answer without support, as for one whose sentences have no content words
    from_event = (
        f"if({judged} = 0, NULL, arrayCount((n, k) -> n > 0 AND k / n >= {threshold}, {_SUPPORT_WORDS}, "
        f"{_SUPPORT_IN_CONTEXT}) / {judged})"
    )
    if not judge_text:
        return from_event
    vocabulary = (
        f"(SELECT DISTINCT cityHash64(text), arrayJoin({content_words_sql('text')}) "
        f"FROM (SELECT DISTINCT arrayJoin({texts}) AS text FROM {staging} "
        f"WHERE empty({_SUPPORT_WORDS})))"
    )
    supported = (
        f"length(arrayFilter(w -> arrayExists(h -> (h, w) IN {vocabulary}, hashes), ws)) / length(ws) "
        f">= {threshold}"
    )
    from_text = (
        f"if(empty(sentences), NULL, "
        f"countEqual(arrayMap(ws -> {supported}, sentences), 1) / length(sentences))"
    )
    return f"if(empty({_SUPPORT_WORDS}), {from_text}, {from_event})"


# --- the row -------------------------------------------------------------------------------------------

# DateTime64 holds 1900-2299; the fast path takes event times from the epoch to its end, in whole
# nanoseconds of a valid Timestamp. Anything else goes the Python way.
_MAX_SECONDS = 10_413_791_999


def redaction_sql(policy: RedactionPolicy, tenant: str, text: str) -> str:
    """RedactionPolicy.apply in SQL, for a policy without a salt (a salted hash stays in Python)."""
    hashed = f"concat('sha256:', lower(hex(SHA256({text}))))"
    mode = mode_sql(policy, tenant)
    return f"multiIf({mode} = 'store', {text}, {text} = '' OR {mode} = 'drop', '', {hashed})"


def mode_sql(policy: RedactionPolicy, tenant: str) -> str:
    if not policy.tenants:
        return sql_string(policy.default)
    names = "[" + ", ".join(map(sql_string, policy.tenants)) + "]"
    modes = "[" + ", ".join(map(sql_string, policy.tenants.values())) + "]"
    return f"transform({tenant}, {names}, {modes}, {sql_string(policy.default)})"


def valid_sql(policy: RedactionPolicy, checks: list[str]) -> str:
    """Whether a staged record may take the fast path: an event the Python path would accept (a UUID
    event id, tenant and correlation ids, a timestamp the tables hold, valid UTF-8 in every string),
    of a tenant whose text is not hashed with a salt."""
    uuid = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    conditions = [
        f"match(meta_event_id, {sql_string(uuid)})",
        "meta_tenant_id != ''",
        "meta_correlation_id != ''",
        "meta_occurred_at_nanos BETWEEN 0 AND 999999999",
        f"meta_occurred_at_seconds BETWEEN 0 AND {_MAX_SECONDS}",
        *checks,
    ]
    if policy.salted:
        conditions.append(f"{mode_sql(policy, 'meta_tenant_id')} != 'hash'")
    return " AND ".join(conditions)


def rows_sql(
    policy: RedactionPolicy, support_threshold: float, columns: tuple[str, ...], *, judge_text: bool = True
) -> str:
    """INSERT INTO answered_rows the requests row of every staged answer (services/monitor/domain.py's
    answered_row), its position in the batch, and whether it may take the fast path. Without
    `judge_text`, for a batch whose answers all carry their sentence support, the statement leaves out
    the text branch of groundedness_sql: its analysis alone costs ~10 ms a batch."""
    moment = (
        "if(meta_occurred_at_seconds = 0 AND meta_occurred_at_nanos = 0, now64(3, 'UTC'), "
        "fromUnixTimestamp64Milli("
        "meta_occurred_at_seconds * 1000 + intDiv(meta_occurred_at_nanos, 1000000), 'UTC'))"
    )
    stage_names = "arrayDistinct(arrayFilter(s -> s != '', timings.stage))"
    stage_totals = (
        "arrayMap(s -> arraySum(arrayFilter((ms, st) -> st = s, timings.duration_ms, timings.stage)), "
        f"{stage_names})"
    )
    nested = "[" + ", ".join(map(sql_string, sorted(NESTED_STAGES))) + "]"
    # domain.row_version(ANSWERED, t) is this plus t's epoch milliseconds
    rank = row_version(ANSWERED, datetime.fromtimestamp(0, UTC))
    tenant = "meta_tenant_id"
    names = ", ".join((*columns, "row_no", "fast_path"))
    checks = string_checks(QueryAnswered.DESCRIPTOR)
    text_columns = (
        f"""{sentence_words_sql("staged.answer")} AS sentences,  -- the answer as it came, not redacted
        arrayMap(t -> cityHash64(t), context.text) AS hashes,"""
        if judge_text
        else ""
    )
    # compile_expressions = 0: JIT-compiling these expressions costs more than it saves on one batch;
    # max_threads = 1: one core (no slower here), the other stays with Kafka and the query path;
    # short_circuit_function_evaluation = 'force_enable': an answer that carries its sentence support
    # skips the text branch of groundedness_sql (tokenising is most of the statement's work).
    return f"""
INSERT INTO {ROWS_TABLE} ({names})
SELECT {names}
FROM (
    SELECT
        meta_correlation_id AS correlation_id,
        meta_event_id AS event_id,
        {tenant} AS tenant_id,
        {moment} AS occurred_at,
        toUInt64({rank} + toUnixTimestamp64Milli(occurred_at)) AS version,
        '{ANSWERED}' AS status,
        {redaction_sql(policy, tenant, "staged.question")} AS question,
        {redaction_sql(policy, tenant, "staged.answer")} AS answer,
        {mode_sql(policy, tenant)} AS redaction,
        model_name,
        model_version,
        prompt_template_id,
        prompt_template_version,
        usage_prompt_tokens AS prompt_tokens,
        usage_completion_tokens AS completion_tokens,
        CAST(({stage_names}, {stage_totals}), 'Map(String, Float64)') AS stage_ms,
        arraySum(arrayFilter((ms, s) -> NOT has({nested}, s), mapValues(stage_ms), mapKeys(stage_ms)))
            AS total_ms,
        context.chunk_id AS chunk_ids,
        context.score AS chunk_scores,
        citations.chunk_id AS cited_chunk_ids,
        {text_columns}
        {groundedness_sql("context.text", STAGING_TABLE, support_threshold, judge_text=judge_text)}
            AS groundedness,
        '' AS error_reason,
        '' AS error_detail,
        '' AS failed_stage,
        rowNumberInAllBlocks() AS row_no,
        {valid_sql(policy, checks)} AS fast_path
    FROM {STAGING_TABLE} AS staged
)
SETTINGS compile_expressions = 0, max_threads = 1, short_circuit_function_evaluation = 'force_enable'
"""


# One string per request (the tenant id's length first, so no two requests share one).
_REQUEST_KEY = "concat(toString(length(tenant_id)), ':', tenant_id, correlation_id)"
# Rows of answered_rows to store: the newest per request in the batch (domain.newest_per_request, the
# first of equal versions), above what is stored: {stored_keys:...} and {stored_versions:...} are the
# requests of the batch stored before and their highest versions (MonitorStore.insert_requests).
_FRESH = (
    f"FROM {ROWS_TABLE} WHERE version > "
    f"transform({_REQUEST_KEY}, {{stored_keys:Array(String)}}, {{stored_versions:Array(UInt64)}}, "
    "toUInt64(0)) "
    "ORDER BY version DESC, row_no LIMIT 1 BY tenant_id, correlation_id"
)
_STORED_VERSIONS = f"""
SELECT {_REQUEST_KEY}, max(version)
FROM requests
WHERE tenant_id IN (SELECT tenant_id FROM {ROWS_TABLE})
  AND correlation_id IN (SELECT correlation_id FROM {ROWS_TABLE})
GROUP BY tenant_id, correlation_id
"""


# --- framing and the batch ----------------------------------------------------------------------------


class Refused(Exception):
    """A record of the batch must take the per-event path (an invalid event, or salted hashing)."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SHORT_VARINTS = [_varint(n) for n in range(1 << 14)]  # every length up to 16 KiB: one list lookup


def frame(values: Iterable[bytes]) -> bytes:
    """Messages as FORMAT Protobuf reads them: each one after its length as a varint."""
    parts: list[bytes] = []
    append = parts.append
    for value in values:
        size = len(value)
        append(_SHORT_VARINTS[size] if size < 16384 else _varint(size))
        append(value)
    return b"".join(parts)


@dataclass(frozen=True)
class AnsweredStatements:
    """The SQL of the fast path for one redaction policy and support threshold, built once."""

    schema: str
    message: str
    prepare: tuple[str, ...]
    rows: str
    rows_judged: str  # for a batch whose answers all carry their sentence support
    store: str
    samples: str

    @classmethod
    def build(
        cls, policy: RedactionPolicy, support_threshold: float, request_columns: tuple[str, ...]
    ) -> AnsweredStatements:
        descriptor = QueryAnswered.DESCRIPTOR
        staging = ", ".join(f"`{name}` {kind}" for name, kind in staging_columns(descriptor))
        names = ", ".join(request_columns)
        return cls(
            schema=protobuf_schema(descriptor),
            message=_local_name(descriptor),
            # Temporary tables: one set per session, so monitor replicas on one server never meet.
            prepare=(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING_TABLE} ({staging}) ENGINE = Memory",
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {ROWS_TABLE} ENGINE = Memory "
                f"AS SELECT {names}, toUInt64(0) AS row_no, toUInt8(0) AS fast_path FROM requests WHERE 0",
                f"TRUNCATE TABLE {STAGING_TABLE}",
                f"TRUNCATE TABLE {ROWS_TABLE}",
            ),
            rows=rows_sql(policy, support_threshold, request_columns),
            rows_judged=rows_sql(policy, support_threshold, request_columns, judge_text=False),
            # optimize_on_insert = 0: _FRESH gives one row per request already, so the engine's
            # merge of the inserted block (ReplacingMergeTree) is redundant: 76 -> 33 ms a 20,000-row batch.
            store=f"INSERT INTO requests ({names}) SETTINGS optimize_on_insert = 0 SELECT {names} {_FRESH}",
            samples=(
                "SELECT tenant_id, toUnixTimestamp64Milli(occurred_at), groundedness, empty(chunk_ids) "
                + _FRESH
            ),
        )


def store_answered(db: ClickHouse, statements: AnsweredStatements, framed: bytes) -> list[tuple[str, Sample]]:
    """Store a batch of framed QueryAnswered records as `requests` rows; the (tenant, quality sample)
    of each row inserted. Raises Refused, with nothing stored, when a record needs the
    per-event path."""
    for statement in statements.prepare:
        db.command(statement)
    try:
        db.insert_protobuf(STAGING_TABLE, framed, statements.schema, statements.message)
    except ClickHouseUnavailable:
        raise
    except Exception as exc:  # a record ClickHouse cannot parse: find it event by event
        raise Refused(f"ClickHouse could not read the batch: {str(exc)[:300]}") from exc
    [(unjudged,)] = db.query(f"SELECT countIf(empty({_SUPPORT_WORDS})) FROM {STAGING_TABLE}")
    db.command(statements.rows if int(unjudged) else statements.rows_judged)
    [(refused,)] = db.query(f"SELECT countIf(NOT fast_path) FROM {ROWS_TABLE}")
    if int(refused):
        raise Refused(f"{refused} record(s) are not valid events or need salted hashing")
    stored = db.query(_STORED_VERSIONS)
    versions = {
        "stored_keys": [str(key) for key, _ in stored],
        "stored_versions": [int(version) for _, version in stored],
    }
    db.command(statements.store, versions)
    return [
        (tenant, Sample(at=int(ms) / 1000, failed=False, groundedness=score, empty_retrieval=bool(empty)))
        for tenant, ms, score, empty in db.query(statements.samples, versions)
    ]
