from google.protobuf import timestamp_pb2 as _timestamp_pb2
from llmops.common.v1 import event_meta_pb2 as _event_meta_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SpanStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPAN_STATUS_UNSPECIFIED: _ClassVar[SpanStatus]
    SPAN_STATUS_OK: _ClassVar[SpanStatus]
    SPAN_STATUS_ERROR: _ClassVar[SpanStatus]

class AlertSeverity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_SEVERITY_UNSPECIFIED: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_WARNING: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_CRITICAL: _ClassVar[AlertSeverity]
SPAN_STATUS_UNSPECIFIED: SpanStatus
SPAN_STATUS_OK: SpanStatus
SPAN_STATUS_ERROR: SpanStatus
ALERT_SEVERITY_UNSPECIFIED: AlertSeverity
ALERT_SEVERITY_WARNING: AlertSeverity
ALERT_SEVERITY_CRITICAL: AlertSeverity

class TelemetrySpan(_message.Message):
    __slots__ = ("meta", "trace_id", "span_id", "parent_span_id", "stage", "started_at", "duration_ms", "status", "error", "metrics", "attributes")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    trace_id: str
    span_id: str
    parent_span_id: str
    stage: str
    started_at: _timestamp_pb2.Timestamp
    duration_ms: float
    status: SpanStatus
    error: str
    metrics: _containers.ScalarMap[str, float]
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., stage: _Optional[str] = ..., started_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., duration_ms: _Optional[float] = ..., status: _Optional[_Union[SpanStatus, str]] = ..., error: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class QualityAlert(_message.Message):
    __slots__ = ("meta", "signal", "observed", "threshold", "severity", "window_start", "window_end", "detail")
    META_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    signal: str
    observed: float
    threshold: float
    severity: AlertSeverity
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    detail: str
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., signal: _Optional[str] = ..., observed: _Optional[float] = ..., threshold: _Optional[float] = ..., severity: _Optional[_Union[AlertSeverity, str]] = ..., window_start: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...
