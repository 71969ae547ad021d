from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUEST_STATUS_UNSPECIFIED: _ClassVar[RequestStatus]
    REQUEST_STATUS_ANSWERED: _ClassVar[RequestStatus]
    REQUEST_STATUS_FAILED: _ClassVar[RequestStatus]
REQUEST_STATUS_UNSPECIFIED: RequestStatus
REQUEST_STATUS_ANSWERED: RequestStatus
REQUEST_STATUS_FAILED: RequestStatus

class TimeWindow(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, start: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RequestRecord(_message.Message):
    __slots__ = ("correlation_id", "event_id", "tenant_id", "occurred_at", "status", "question", "answer", "redaction", "model_name", "model_version", "prompt_template_id", "prompt_template_version", "prompt_tokens", "completion_tokens", "stage_ms", "total_ms", "chunk_ids", "chunk_scores", "groundedness", "error_reason", "error_detail", "failed_stage")
    class StageMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    REDACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STAGE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_IDS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SCORES_FIELD_NUMBER: _ClassVar[int]
    GROUNDEDNESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_DETAIL_FIELD_NUMBER: _ClassVar[int]
    FAILED_STAGE_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    event_id: str
    tenant_id: str
    occurred_at: _timestamp_pb2.Timestamp
    status: RequestStatus
    question: str
    answer: str
    redaction: str
    model_name: str
    model_version: str
    prompt_template_id: str
    prompt_template_version: str
    prompt_tokens: int
    completion_tokens: int
    stage_ms: _containers.ScalarMap[str, float]
    total_ms: float
    chunk_ids: _containers.RepeatedScalarFieldContainer[str]
    chunk_scores: _containers.RepeatedScalarFieldContainer[float]
    groundedness: float
    error_reason: str
    error_detail: str
    failed_stage: str
    def __init__(self, correlation_id: _Optional[str] = ..., event_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., occurred_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[RequestStatus, str]] = ..., question: _Optional[str] = ..., answer: _Optional[str] = ..., redaction: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., prompt_template_id: _Optional[str] = ..., prompt_template_version: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., stage_ms: _Optional[_Mapping[str, float]] = ..., total_ms: _Optional[float] = ..., chunk_ids: _Optional[_Iterable[str]] = ..., chunk_scores: _Optional[_Iterable[float]] = ..., groundedness: _Optional[float] = ..., error_reason: _Optional[str] = ..., error_detail: _Optional[str] = ..., failed_stage: _Optional[str] = ...) -> None: ...

class ListRequestsRequest(_message.Message):
    __slots__ = ("tenant_id", "window", "correlation_id", "limit")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    window: TimeWindow
    correlation_id: str
    limit: int
    def __init__(self, tenant_id: _Optional[str] = ..., window: _Optional[_Union[TimeWindow, _Mapping]] = ..., correlation_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListRequestsResponse(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RequestRecord]
    def __init__(self, requests: _Optional[_Iterable[_Union[RequestRecord, _Mapping]]] = ...) -> None: ...

class StageLatency(_message.Message):
    __slots__ = ("stage", "count", "p50_ms", "p95_ms", "p99_ms")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    def __init__(self, stage: _Optional[str] = ..., count: _Optional[int] = ..., p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class GetLatencyRequest(_message.Message):
    __slots__ = ("tenant_id", "window")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    window: TimeWindow
    def __init__(self, tenant_id: _Optional[str] = ..., window: _Optional[_Union[TimeWindow, _Mapping]] = ...) -> None: ...

class GetLatencyResponse(_message.Message):
    __slots__ = ("stages",)
    STAGES_FIELD_NUMBER: _ClassVar[int]
    stages: _containers.RepeatedCompositeFieldContainer[StageLatency]
    def __init__(self, stages: _Optional[_Iterable[_Union[StageLatency, _Mapping]]] = ...) -> None: ...

class TrafficBucket(_message.Message):
    __slots__ = ("start", "requests", "failed", "prompt_tokens", "completion_tokens")
    START_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    requests: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, start: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., requests: _Optional[int] = ..., failed: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class ModelTokens(_message.Message):
    __slots__ = ("model_name", "model_version", "requests", "prompt_tokens", "completion_tokens", "failed", "error_rate")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    failed: int
    error_rate: float
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., requests: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., failed: _Optional[int] = ..., error_rate: _Optional[float] = ...) -> None: ...

class GetTrafficRequest(_message.Message):
    __slots__ = ("tenant_id", "window", "bucket_seconds")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    BUCKET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    window: TimeWindow
    bucket_seconds: int
    def __init__(self, tenant_id: _Optional[str] = ..., window: _Optional[_Union[TimeWindow, _Mapping]] = ..., bucket_seconds: _Optional[int] = ...) -> None: ...

class GetTrafficResponse(_message.Message):
    __slots__ = ("buckets", "requests", "failed", "error_rate", "requests_per_second", "prompt_tokens", "completion_tokens", "models", "failures_by_reason", "empty_retrieval_rate")
    class FailuresByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    EMPTY_RETRIEVAL_RATE_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[TrafficBucket]
    requests: int
    failed: int
    error_rate: float
    requests_per_second: float
    prompt_tokens: int
    completion_tokens: int
    models: _containers.RepeatedCompositeFieldContainer[ModelTokens]
    failures_by_reason: _containers.ScalarMap[str, int]
    empty_retrieval_rate: float
    def __init__(self, buckets: _Optional[_Iterable[_Union[TrafficBucket, _Mapping]]] = ..., requests: _Optional[int] = ..., failed: _Optional[int] = ..., error_rate: _Optional[float] = ..., requests_per_second: _Optional[float] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelTokens, _Mapping]]] = ..., failures_by_reason: _Optional[_Mapping[str, int]] = ..., empty_retrieval_rate: _Optional[float] = ...) -> None: ...

class GroundednessBucket(_message.Message):
    __slots__ = ("start", "scored", "mean", "min")
    START_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    scored: int
    mean: float
    min: float
    def __init__(self, start: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., scored: _Optional[int] = ..., mean: _Optional[float] = ..., min: _Optional[float] = ...) -> None: ...

class GetGroundednessTrendRequest(_message.Message):
    __slots__ = ("tenant_id", "window", "bucket_seconds")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    BUCKET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    window: TimeWindow
    bucket_seconds: int
    def __init__(self, tenant_id: _Optional[str] = ..., window: _Optional[_Union[TimeWindow, _Mapping]] = ..., bucket_seconds: _Optional[int] = ...) -> None: ...

class GetGroundednessTrendResponse(_message.Message):
    __slots__ = ("buckets",)
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[GroundednessBucket]
    def __init__(self, buckets: _Optional[_Iterable[_Union[GroundednessBucket, _Mapping]]] = ...) -> None: ...

class ListWorstGroundedRequest(_message.Message):
    __slots__ = ("tenant_id", "window", "limit")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    window: TimeWindow
    limit: int
    def __init__(self, tenant_id: _Optional[str] = ..., window: _Optional[_Union[TimeWindow, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListWorstGroundedResponse(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RequestRecord]
    def __init__(self, requests: _Optional[_Iterable[_Union[RequestRecord, _Mapping]]] = ...) -> None: ...

class FeedbackCounts(_message.Message):
    __slots__ = ("total", "up", "down", "mean_rating", "rated", "corrections")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    DOWN_FIELD_NUMBER: _ClassVar[int]
    MEAN_RATING_FIELD_NUMBER: _ClassVar[int]
    RATED_FIELD_NUMBER: _ClassVar[int]
    CORRECTIONS_FIELD_NUMBER: _ClassVar[int]
    total: int
    up: int
    down: int
    mean_rating: float
    rated: int
    corrections: int
    def __init__(self, total: _Optional[int] = ..., up: _Optional[int] = ..., down: _Optional[int] = ..., mean_rating: _Optional[float] = ..., rated: _Optional[int] = ..., corrections: _Optional[int] = ...) -> None: ...

class ModelFeedback(_message.Message):
    __slots__ = ("model_name", "model_version", "prompt_template_version", "counts")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    prompt_template_version: str
    counts: FeedbackCounts
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., prompt_template_version: _Optional[str] = ..., counts: _Optional[_Union[FeedbackCounts, _Mapping]] = ...) -> None: ...

class GetFeedbackSummaryRequest(_message.Message):
    __slots__ = ("tenant_id", "window")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    window: TimeWindow
    def __init__(self, tenant_id: _Optional[str] = ..., window: _Optional[_Union[TimeWindow, _Mapping]] = ...) -> None: ...

class GetFeedbackSummaryResponse(_message.Message):
    __slots__ = ("total", "models")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    total: FeedbackCounts
    models: _containers.RepeatedCompositeFieldContainer[ModelFeedback]
    def __init__(self, total: _Optional[_Union[FeedbackCounts, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ModelFeedback, _Mapping]]] = ...) -> None: ...
