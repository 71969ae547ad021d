from google.protobuf import timestamp_pb2 as _timestamp_pb2
from llmops.common.v1 import event_meta_pb2 as _event_meta_pb2
from llmops.query.v1 import query_pb2 as _query_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueryRequested(_message.Message):
    __slots__ = ("meta", "question", "retrieval", "reply_topic", "deadline", "prompt_template_id", "max_tokens", "stream")
    META_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    REPLY_TOPIC_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    question: str
    retrieval: _query_pb2.RetrievalOptions
    reply_topic: str
    deadline: _timestamp_pb2.Timestamp
    prompt_template_id: str
    max_tokens: int
    stream: bool
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., question: _Optional[str] = ..., retrieval: _Optional[_Union[_query_pb2.RetrievalOptions, _Mapping]] = ..., reply_topic: _Optional[str] = ..., deadline: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., prompt_template_id: _Optional[str] = ..., max_tokens: _Optional[int] = ..., stream: bool = ...) -> None: ...

class QueryEmbedded(_message.Message):
    __slots__ = ("meta", "request", "vector", "embedding_model", "timings")
    META_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    request: QueryRequested
    vector: _containers.RepeatedScalarFieldContainer[float]
    embedding_model: str
    timings: _containers.RepeatedCompositeFieldContainer[_query_pb2.StageTiming]
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., request: _Optional[_Union[QueryRequested, _Mapping]] = ..., vector: _Optional[_Iterable[float]] = ..., embedding_model: _Optional[str] = ..., timings: _Optional[_Iterable[_Union[_query_pb2.StageTiming, _Mapping]]] = ...) -> None: ...

class ContextRetrieved(_message.Message):
    __slots__ = ("meta", "request", "chunks", "timings")
    META_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    request: QueryRequested
    chunks: _containers.RepeatedCompositeFieldContainer[_query_pb2.RetrievedChunk]
    timings: _containers.RepeatedCompositeFieldContainer[_query_pb2.StageTiming]
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., request: _Optional[_Union[QueryRequested, _Mapping]] = ..., chunks: _Optional[_Iterable[_Union[_query_pb2.RetrievedChunk, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[_query_pb2.StageTiming, _Mapping]]] = ...) -> None: ...

class GenerationChunk(_message.Message):
    __slots__ = ("meta", "sequence", "text")
    META_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    sequence: int
    text: str
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., sequence: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class QueryAnswered(_message.Message):
    __slots__ = ("meta", "question", "answer", "citations", "context", "usage", "model_name", "model_version", "prompt_template_id", "prompt_template_version", "timings", "sentence_support")
    META_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    question: str
    answer: str
    citations: _containers.RepeatedCompositeFieldContainer[_query_pb2.Citation]
    context: _containers.RepeatedCompositeFieldContainer[_query_pb2.RetrievedChunk]
    usage: _query_pb2.TokenUsage
    model_name: str
    model_version: str
    prompt_template_id: str
    prompt_template_version: str
    timings: _containers.RepeatedCompositeFieldContainer[_query_pb2.StageTiming]
    sentence_support: _containers.RepeatedCompositeFieldContainer[_query_pb2.SentenceSupport]
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., question: _Optional[str] = ..., answer: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[_query_pb2.Citation, _Mapping]]] = ..., context: _Optional[_Iterable[_Union[_query_pb2.RetrievedChunk, _Mapping]]] = ..., usage: _Optional[_Union[_query_pb2.TokenUsage, _Mapping]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., prompt_template_id: _Optional[str] = ..., prompt_template_version: _Optional[str] = ..., timings: _Optional[_Iterable[_Union[_query_pb2.StageTiming, _Mapping]]] = ..., sentence_support: _Optional[_Iterable[_Union[_query_pb2.SentenceSupport, _Mapping]]] = ...) -> None: ...

class QueryFailed(_message.Message):
    __slots__ = ("meta", "reason", "detail", "failed_stage", "model_name", "model_version")
    META_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    FAILED_STAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    reason: _query_pb2.FailureReason
    detail: str
    failed_stage: str
    model_name: str
    model_version: str
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., reason: _Optional[_Union[_query_pb2.FailureReason, str]] = ..., detail: _Optional[str] = ..., failed_stage: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...
