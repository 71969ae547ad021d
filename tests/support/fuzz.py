"""Poison-input fuzzing: a deterministic corpus of bad Kafka records built with hypothesis, and the
oracle that says which consuming service must dead-letter each record.

Hypothesis draws a *recipe* per record (topic, kind, field values, mutation positions); `build`
turns it into bytes with a unique event id per record, so no two records collide in a service's
idempotency store. `must_reject` decides, from the bytes alone (protobuf parsing and the platform's
documented rules: EventMeta checks, known tenants, empty documents and questions, option limits),
whether a service has to dead-letter the record; records it cannot decide (a random payload that
happens to be a usable event) are not counted, but every service must still survive them.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from llmops.common.v1.event_meta_pb2 import EventMeta

from shared.topics import (
    CHUNKS_EMBEDDED,
    CONTEXT_RETRIEVED,
    DELETE_REQUESTED,
    INGEST_REQUESTED,
    QUERY_EMBEDDED,
    QUERY_REQUESTED,
    Topic,
)

FUZZ_HEADER = "x-fuzz-id"
EVENT_TYPE = "event-type"

# Kinds of bad records.
RANDOM_BYTES = "random-bytes"
TRUNCATED = "truncated"
BIT_FLIPPED = "bit-flipped"
BAD_META = "bad-meta"
WRONG_TYPE_HEADER = "wrong-type-header"
WRONG_TYPE = "wrong-type"
INVALID_CONTENT = "invalid-content"
RANDOM_FIELDS = "random-fields"
KINDS = (
    RANDOM_BYTES,
    TRUNCATED,
    BIT_FLIPPED,
    BAD_META,
    WRONG_TYPE_HEADER,
    WRONG_TYPE,
    INVALID_CONTENT,
    RANDOM_FIELDS,
)
KIND_WEIGHTS = (20, 15, 15, 15, 10, 5, 10, 10)

MAX_TOP_K = 100  # services/retriever/domain.py
MAX_DOCUMENT_ID = 256  # services/embedder/domain.py
MAX_QUESTION_CHARS = 4000  # LLMOPS_EMBEDDER_MAX_QUESTION_CHARS default
FAR_FUTURE_S = 24 * 3600  # a deadline this far ahead cannot pass while the test runs


@dataclass
class Case:
    """One bad record: what hypothesis drew, then (after `build`) the bytes that go on the topic."""

    topic: Topic
    kind: str
    message: Message | None = None  # well-formed kinds: the event before serialization
    raw: bytes = b""  # RANDOM_BYTES
    cut: float = 0.0  # TRUNCATED: keep this fraction of the encoding
    flips: tuple[int, ...] = ()  # BIT_FLIPPED: bit positions (modulo the encoding's length)
    keep_event_id: bool = False  # BAD_META: the drawn (bad) event id stays
    header_type: str | None = None  # the event-type header, None for none
    index: int = -1
    payload: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------ strategies

_short_text = st.text(max_size=24)
_uuid_text = st.uuids().map(str)


def _scalar(fd: FieldDescriptor) -> st.SearchStrategy[Any]:  # noqa: PLR0911 (one per type)
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING:
        return _short_text
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=48)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if t == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if t == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 8)  # known and unknown enum values (proto3 enums are open)
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return st.integers(-(2**31), 2**31 - 1)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    return st.integers(-(2**63), 2**63 - 1)


NOW_S = int(time.time())  # fixed once, so every draw of the same choices gives the same value


def _timestamps() -> st.SearchStrategy[Timestamp]:
    seconds = st.one_of(
        st.integers(-3600, 3600).map(lambda offset: NOW_S + offset),
        st.integers(-(2**40), 2**40),
        st.sampled_from([0, -1]),
    )
    return st.builds(lambda s, n: Timestamp(seconds=s, nanos=n), seconds, st.integers(-10, 2**31 - 1))


_MESSAGES: dict[tuple[str, int], st.SearchStrategy[Message]] = {}


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of `descriptor`'s type with random values in a random subset of its fields."""
    key = (descriptor.full_name, depth)
    if key not in _MESSAGES:
        _MESSAGES[key] = _messages(descriptor, depth)
    return _MESSAGES[key]


def _messages(descriptor: Descriptor, depth: int) -> st.SearchStrategy[Message]:
    if descriptor.full_name == "google.protobuf.Timestamp":
        return _timestamps()
    cls: type[Message] = _message_class(descriptor)
    fields = [f for f in descriptor.fields if depth < 3 or f.type != FieldDescriptor.TYPE_MESSAGE]

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        for fd in fields:
            if not draw(st.booleans()):
                continue
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                key_fd, value_fd = (
                    fd.message_type.fields_by_name["key"],
                    fd.message_type.fields_by_name["value"],
                )
                entries = draw(st.dictionaries(_scalar(key_fd), _scalar(value_fd), max_size=3))
                getattr(msg, fd.name).update(entries)
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                values = draw(st.lists(messages(fd.message_type, depth + 1), min_size=1, max_size=2))
                if fd.label == FieldDescriptor.LABEL_REPEATED:
                    getattr(msg, fd.name).extend(values)
                else:
                    getattr(msg, fd.name).CopyFrom(values[0])
            elif fd.label == FieldDescriptor.LABEL_REPEATED:
                getattr(msg, fd.name).extend(draw(st.lists(_scalar(fd), max_size=4)))
            else:
                setattr(msg, fd.name, draw(_scalar(fd)))
        return msg

    return build()


def _message_class(descriptor: Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def _message_type(topic: Topic) -> type[Message]:
    assert topic.message is not None
    return topic.message


UNKNOWN_TENANTS = st.one_of(
    st.sampled_from(["nobody", "ghost", "FUZZ", "fuzz ", "a" * 65, "../etc", "tenant/1"]),
    st.text(min_size=1, max_size=70),
)


def unknown_tenant(known: Sequence[str]) -> st.SearchStrategy[str]:
    return UNKNOWN_TENANTS.filter(lambda t: t not in known)


def valid_meta(tenants: st.SearchStrategy[str]) -> st.SearchStrategy[EventMeta]:
    """Usable metadata; the event id is replaced by a unique one in `build`."""
    return st.builds(
        lambda tenant, correlation, producer, ts: EventMeta(
            event_id=str(uuid.UUID(int=0)),
            correlation_id=correlation,
            tenant_id=tenant,
            producer=producer,
            occurred_at=ts,
            schema_version=1,
        ),
        tenants,
        _uuid_text | st.text(min_size=1, max_size=40),
        _short_text,
        _timestamps(),
    )


def bad_meta() -> st.SearchStrategy[EventMeta | None]:
    """Metadata the platform must refuse (None: no meta at all)."""
    base = valid_meta(st.just("fuzz"))

    def broken(meta: EventMeta, how: str, junk: str) -> EventMeta:
        meta.event_id = str(uuid.uuid5(uuid.NAMESPACE_OID, junk))
        if how == "no-event-id":
            meta.event_id = ""
        elif how == "event-id-not-uuid":
            meta.event_id = junk if not _is_uuid(junk) else junk + "!"
        elif how == "no-tenant":
            meta.tenant_id = ""
        elif how == "no-correlation":
            meta.correlation_id = ""
        return meta

    how = st.sampled_from(["no-event-id", "event-id-not-uuid", "no-tenant", "no-correlation"])
    return st.one_of(st.none(), st.builds(broken, base, how, st.text(min_size=1, max_size=40)))


def _with_meta(msg: Message, meta: EventMeta | None) -> Message:
    msg.ClearField("meta")
    if meta is not None:
        msg.meta.CopyFrom(meta)  # type: ignore[attr-defined]
    return msg


def invalid_content(topic: Topic, known: Sequence[str]) -> st.SearchStrategy[Message]:  # noqa: PLR0911
    """Well-formed events of the topic's type, usable metadata, content the consumer must refuse
    (no deadline, so no consumer may turn them into a deadline failure instead)."""
    cls = _message_type(topic)
    any_msg = messages(cls.DESCRIPTOR)
    unknown = valid_meta(unknown_tenant(known))
    good = valid_meta(st.sampled_from(list(known)))

    def clean(msg: Message, meta: EventMeta) -> Message:
        _with_meta(msg, meta)
        request = getattr(msg, "request", None)
        if request is not None:
            request.ClearField("deadline")
            request.reply_topic = ""
        elif topic is QUERY_REQUESTED:
            msg.ClearField("deadline")
            msg.reply_topic = ""  # type: ignore[attr-defined]
        return msg

    unknown_tenant_events = st.builds(clean, any_msg, unknown)
    if topic is INGEST_REQUESTED:

        def doc(msg: Any, meta: EventMeta, how: str) -> Any:
            clean(msg, meta)
            if how == "empty-content":
                msg.document.content = b""
                msg.document.document_id = msg.document.document_id or "doc"
            elif how == "no-document-id":
                msg.document.document_id = ""
            elif how == "long-document-id":
                msg.document.document_id = "d" * (MAX_DOCUMENT_ID + 1)
            elif how == "not-text":
                msg.document.document_id = msg.document.document_id or "doc"
                msg.document.content = b"\xff\xfe\xfd\x00 binary garbage \x80\x81"
                msg.document.format = 1  # plain text
            return msg

        how = st.sampled_from(["empty-content", "no-document-id", "long-document-id", "not-text"])
        return unknown_tenant_events | st.builds(doc, any_msg, good, how)
    if topic is QUERY_REQUESTED:

        def question(msg: Any, meta: EventMeta, text: str) -> Any:
            clean(msg, meta)
            msg.question = text
            return msg

        bad_question = st.one_of(st.sampled_from(["", " ", "\n\t "]), st.just("q" * (MAX_QUESTION_CHARS + 1)))
        return unknown_tenant_events | st.builds(question, any_msg, good, bad_question)
    if topic is QUERY_EMBEDDED:

        def options(msg: Any, meta: EventMeta, top_k: int) -> Any:
            clean(msg, meta)
            msg.request.retrieval.top_k = top_k
            return msg

        return unknown_tenant_events | st.builds(
            options, any_msg, good, st.integers(MAX_TOP_K + 1, 2**32 - 1)
        )
    if topic is CONTEXT_RETRIEVED:

        def template(msg: Any, meta: EventMeta, template_id: str) -> Any:
            clean(msg, meta)
            msg.request.prompt_template_id = template_id
            return msg

        unknown_template = st.text(min_size=1, max_size=30).filter(lambda t: t != "grounded_qa")
        return unknown_tenant_events | st.builds(template, any_msg, good, unknown_template)
    if topic is CHUNKS_EMBEDDED:

        def no_id(msg: Any, meta: EventMeta) -> Any:
            clean(msg, meta)
            msg.document_id = ""
            return msg

        return unknown_tenant_events | st.builds(no_id, any_msg, good)
    if topic is DELETE_REQUESTED:
        return unknown_tenant_events
    # Topics whose consumers (gateway, monitor) accept any tenant: broken metadata is what they refuse.
    return st.builds(_with_meta, any_msg, bad_meta())


def cases(topic: Topic, all_topics: Sequence[Topic], known: Sequence[str]) -> st.SearchStrategy[Case]:
    cls = _message_type(topic)
    any_msg = messages(cls.DESCRIPTOR)
    unknown = valid_meta(unknown_tenant(known))
    others = [t for t in all_topics if t.message is not None and t.message is not cls]
    other_msg = st.sampled_from(others).flatmap(
        lambda t: st.builds(_with_meta, messages(_message_type(t).DESCRIPTOR), unknown)
    )
    well_formed = st.builds(_with_meta, any_msg, unknown)
    name = cls.DESCRIPTOR.full_name
    by_kind: dict[str, st.SearchStrategy[Case]] = {
        RANDOM_BYTES: st.builds(lambda b: Case(topic, RANDOM_BYTES, raw=b), st.binary(max_size=300)),
        TRUNCATED: st.builds(
            lambda m, c: Case(topic, TRUNCATED, message=m, cut=c), well_formed, st.floats(0.0, 0.999)
        ),
        BIT_FLIPPED: st.builds(
            lambda m, f: Case(topic, BIT_FLIPPED, message=m, flips=tuple(f)),
            well_formed,
            st.lists(st.integers(0, 2**20), min_size=1, max_size=6),
        ),
        BAD_META: st.builds(
            lambda m, h: Case(topic, BAD_META, message=m, keep_event_id=True, header_type=h),
            st.builds(_with_meta, any_msg, bad_meta()),
            st.sampled_from([None, name]),
        ),
        WRONG_TYPE_HEADER: st.builds(
            lambda m: Case(topic, WRONG_TYPE_HEADER, message=m, header_type=m.DESCRIPTOR.full_name),
            other_msg,
        ),
        WRONG_TYPE: st.builds(lambda m: Case(topic, WRONG_TYPE, message=m), other_msg),
        INVALID_CONTENT: st.builds(
            lambda m, h: Case(topic, INVALID_CONTENT, message=m, header_type=h),
            invalid_content(topic, known),
            st.sampled_from([None, name]),
        ),
        RANDOM_FIELDS: st.builds(
            lambda m, h: Case(topic, RANDOM_FIELDS, message=m, header_type=h),
            well_formed,
            st.sampled_from([None, name]),
        ),
    }
    weighted = [kind for kind, weight in zip(KINDS, KIND_WEIGHTS, strict=True) for _ in range(weight)]
    return st.sampled_from(weighted).flatmap(lambda kind: by_kind[kind])


T = TypeVar("T")


def draw(strategy: st.SearchStrategy[T], count: int, seed_value: int) -> list[T]:
    """`count` draws of `strategy`, the same every run (seeded, no example database, no shrinking)."""
    drawn: list[T] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        drawn.append(value)

    collect()
    return drawn[:count]


def corpus(topics: Sequence[Topic], per_topic: int, known: Sequence[str], nonce: str) -> list[Case]:
    """`per_topic` cases for every topic, the same every run (seeded hypothesis draws), built with
    event ids unique to `nonce`."""
    collected: list[Case] = []
    for number, topic in enumerate(topics):
        collected.extend(draw(cases(topic, topics, known), per_topic, number))
    for index, case in enumerate(collected):
        build(case, index, nonce)
    return collected


def build(case: Case, index: int, nonce: str) -> Case:
    """Serialize `case` with a unique event id, apply its mutation, set its headers."""
    case.index = index
    if case.message is not None:
        msg = case.message
        # No reply topics in the flood: a reply to a random (invalid or auto-created) topic is its own
        # test (test_poison_input.test_invalid_reply_topic_is_dead_lettered_promptly).
        for holder in (msg, getattr(msg, "request", None)):
            if holder is not None and hasattr(holder, "reply_topic"):
                holder.reply_topic = ""
        if msg.HasField("meta") and not case.keep_event_id:
            msg.meta.event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fuzz/{nonce}/{index}"))  # type: ignore[attr-defined]
        data = msg.SerializeToString()
    else:
        data = case.raw
    if case.kind == TRUNCATED:
        data = data[: int(len(data) * case.cut)]
    elif case.kind == BIT_FLIPPED and data:
        mutable = bytearray(data)
        for bit in case.flips:
            position = bit % (len(mutable) * 8)
            mutable[position // 8] ^= 1 << (position % 8)
        data = bytes(mutable)
    case.payload = data
    case.headers = {FUZZ_HEADER: str(index)}
    if case.header_type is not None:
        case.headers[EVENT_TYPE] = case.header_type
    return case


# ------------------------------------------------------------------ the oracle


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def undecodable(case: Case) -> str | None:
    """Why no consumer of the topic can use the record at all (None: it decodes to a usable event)."""
    cls = _message_type(case.topic)
    declared = case.headers.get(EVENT_TYPE)
    if declared and declared != cls.DESCRIPTOR.full_name:
        return "event-type header names another message"
    event = cls()
    try:
        event.ParseFromString(case.payload)
    except DecodeError:
        return "payload does not decode"
    meta: EventMeta = event.meta  # type: ignore[attr-defined]
    if not meta.event_id or not _is_uuid(meta.event_id):
        return "event id missing or not a UUID"
    if not meta.tenant_id or not meta.correlation_id:
        return "tenant or correlation id missing"
    if meta.HasField("occurred_at") and not _valid_timestamp(meta.occurred_at):
        return "occurred_at is not a valid timestamp"
    return None


def _valid_timestamp(ts: Timestamp) -> bool:
    try:
        ts.ToNanoseconds()
    except ValueError:
        return False
    return True


def _decode(case: Case) -> Any:
    event = _message_type(case.topic)()
    event.ParseFromString(case.payload)
    return event


def _deadline_state(request: Any) -> str:
    """'none' (no deadline or far ahead: cannot pass during the test), 'passed', 'unsure', or
    'invalid' (not a valid timestamp: every stage refuses the request)."""
    if not request.HasField("deadline"):
        return "none"
    try:
        at_s = request.deadline.ToNanoseconds() / 1e9
    except ValueError:
        return "invalid"
    if at_s > time.time() + FAR_FUTURE_S:
        return "none"
    if at_s < time.time() - 60:
        return "passed"
    return "unsure"


def _float_bad(value: float) -> bool:
    return math.isnan(value) or not 0.0 <= value <= 1.0


Rule = Callable[[Any, Sequence[str]], str | None]


def _tenant_problem(event: Any, known: Sequence[str]) -> str | None:
    return None if event.meta.tenant_id in known else "unknown tenant"


def _ingest_rule(event: Any, known: Sequence[str]) -> str | None:
    doc = event.document
    if problem := _tenant_problem(event, known):
        return problem
    if not doc.document_id or len(doc.document_id) > MAX_DOCUMENT_ID:
        return "bad document id"
    if not doc.content:
        return "empty document"
    return None  # other content questions (format, text) are left to the embedder


def _question_rule(event: Any, known: Sequence[str]) -> str | None:
    if problem := _tenant_problem(event, known):
        return problem
    if not event.question.strip() or len(event.question) > MAX_QUESTION_CHARS:
        return "bad question"
    if _deadline_state(event) == "invalid":
        return "invalid deadline"
    return None


def _retrieve_rule(event: Any, known: Sequence[str]) -> str | None:
    state = _deadline_state(event.request)
    if state != "none":  # a passed deadline is a QueryFailed(DEADLINE_EXCEEDED), not a dead letter
        return "invalid deadline" if state == "invalid" else None
    if problem := _tenant_problem(event, known):
        return problem
    options = event.request.retrieval
    if options.top_k > MAX_TOP_K:
        return "top_k over the limit"
    if options.HasField("alpha") and _float_bad(options.alpha):
        return "alpha outside [0, 1]"
    if _float_bad(options.score_threshold):
        return "score_threshold outside [0, 1]"
    return None


def _generate_rule(event: Any, known: Sequence[str]) -> str | None:
    state = _deadline_state(event.request)
    if state != "none":
        return "invalid deadline" if state == "invalid" else None
    if problem := _tenant_problem(event, known):
        return problem
    template = event.request.prompt_template_id
    if template and template != "grounded_qa":
        return "unknown prompt template"
    return None


def _chunks_rule(event: Any, known: Sequence[str]) -> str | None:
    if problem := _tenant_problem(event, known):
        return problem
    return None if event.document_id else "document id empty"


# (service, topic) -> the content rule that service applies after decoding; absent: it accepts any.
RULES: dict[tuple[str, str], Rule] = {
    ("embedder", INGEST_REQUESTED.name): _ingest_rule,
    ("embedder", QUERY_REQUESTED.name): _question_rule,
    ("retriever", QUERY_EMBEDDED.name): _retrieve_rule,
    ("retriever", CHUNKS_EMBEDDED.name): _chunks_rule,
    ("retriever", DELETE_REQUESTED.name): _tenant_problem,
    ("generator", CONTEXT_RETRIEVED.name): _generate_rule,
}


def must_reject(case: Case, service: str, known: Sequence[str]) -> str | None:
    """Why `service` must dead-letter the record; None when it may accept it."""
    if reason := undecodable(case):
        return reason
    rule = RULES.get((service, case.topic.name))
    return rule(_decode(case), known) if rule is not None else None
