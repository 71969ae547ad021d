from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class FailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_REASON_UNSPECIFIED: _ClassVar[FailureReason]
    FAILURE_REASON_INVALID_ARGUMENT: _ClassVar[FailureReason]
    FAILURE_REASON_UNAVAILABLE: _ClassVar[FailureReason]
    FAILURE_REASON_DEADLINE_EXCEEDED: _ClassVar[FailureReason]
    FAILURE_REASON_INTERNAL: _ClassVar[FailureReason]
    FAILURE_REASON_NOT_FOUND: _ClassVar[FailureReason]
FAILURE_REASON_UNSPECIFIED: FailureReason
FAILURE_REASON_INVALID_ARGUMENT: FailureReason
FAILURE_REASON_UNAVAILABLE: FailureReason
FAILURE_REASON_DEADLINE_EXCEEDED: FailureReason
FAILURE_REASON_INTERNAL: FailureReason
FAILURE_REASON_NOT_FOUND: FailureReason

class RetrievedChunk(_message.Message):
    __slots__ = ("chunk_id", "document_id", "text", "source_uri", "score", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    chunk_id: str
    document_id: str
    text: str
    source_uri: str
    score: float
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, chunk_id: _Optional[str] = ..., document_id: _Optional[str] = ..., text: _Optional[str] = ..., source_uri: _Optional[str] = ..., score: _Optional[float] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Citation(_message.Message):
    __slots__ = ("marker", "chunk_id", "document_id", "source_uri")
    MARKER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    marker: int
    chunk_id: str
    document_id: str
    source_uri: str
    def __init__(self, marker: _Optional[int] = ..., chunk_id: _Optional[str] = ..., document_id: _Optional[str] = ..., source_uri: _Optional[str] = ...) -> None: ...

class SentenceSupport(_message.Message):
    __slots__ = ("content_words", "words_in_context")
    CONTENT_WORDS_FIELD_NUMBER: _ClassVar[int]
    WORDS_IN_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    content_words: int
    words_in_context: int
    def __init__(self, content_words: _Optional[int] = ..., words_in_context: _Optional[int] = ...) -> None: ...

class TokenUsage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "duration_ms")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    duration_ms: float
    def __init__(self, stage: _Optional[str] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class RetrievalOptions(_message.Message):
    __slots__ = ("top_k", "alpha", "score_threshold", "metadata_filter")
    class MetadataFilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FILTER_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    alpha: float
    score_threshold: float
    metadata_filter: _containers.ScalarMap[str, str]
    def __init__(self, top_k: _Optional[int] = ..., alpha: _Optional[float] = ..., score_threshold: _Optional[float] = ..., metadata_filter: _Optional[_Mapping[str, str]] = ...) -> None: ...
