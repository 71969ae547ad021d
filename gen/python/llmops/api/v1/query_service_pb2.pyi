from llmops.query.v1 import query_pb2 as _query_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueryRequest(_message.Message):
    __slots__ = ("question", "retrieval", "prompt_template_id", "max_tokens")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    question: str
    retrieval: _query_pb2.RetrievalOptions
    prompt_template_id: str
    max_tokens: int
    def __init__(self, question: _Optional[str] = ..., retrieval: _Optional[_Union[_query_pb2.RetrievalOptions, _Mapping]] = ..., prompt_template_id: _Optional[str] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("correlation_id", "answer", "citations", "context", "usage", "model_name", "model_version", "timings")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    answer: str
    citations: _containers.RepeatedCompositeFieldContainer[_query_pb2.Citation]
    context: _containers.RepeatedCompositeFieldContainer[_query_pb2.RetrievedChunk]
    usage: _query_pb2.TokenUsage
    model_name: str
    model_version: str
    timings: _containers.RepeatedCompositeFieldContainer[_query_pb2.StageTiming]
    def __init__(self, correlation_id: _Optional[str] = ..., answer: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[_query_pb2.Citation, _Mapping]]] = ..., context: _Optional[_Iterable[_Union[_query_pb2.RetrievedChunk, _Mapping]]] = ..., usage: _Optional[_Union[_query_pb2.TokenUsage, _Mapping]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., timings: _Optional[_Iterable[_Union[_query_pb2.StageTiming, _Mapping]]] = ...) -> None: ...

class QueryStreamRequest(_message.Message):
    __slots__ = ("question", "retrieval", "prompt_template_id", "max_tokens")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    question: str
    retrieval: _query_pb2.RetrievalOptions
    prompt_template_id: str
    max_tokens: int
    def __init__(self, question: _Optional[str] = ..., retrieval: _Optional[_Union[_query_pb2.RetrievalOptions, _Mapping]] = ..., prompt_template_id: _Optional[str] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class QueryStreamResponse(_message.Message):
    __slots__ = ("token", "final")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    token: str
    final: QueryResponse
    def __init__(self, token: _Optional[str] = ..., final: _Optional[_Union[QueryResponse, _Mapping]] = ...) -> None: ...
