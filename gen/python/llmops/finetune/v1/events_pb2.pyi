from llmops.common.v1 import event_meta_pb2 as _event_meta_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_SCHEDULED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]

class JobTrigger(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_TRIGGER_UNSPECIFIED: _ClassVar[JobTrigger]
    JOB_TRIGGER_NEW_EXAMPLES: _ClassVar[JobTrigger]
    JOB_TRIGGER_QUALITY_ALERT: _ClassVar[JobTrigger]
    JOB_TRIGGER_SCHEDULE: _ClassVar[JobTrigger]
    JOB_TRIGGER_MANUAL: _ClassVar[JobTrigger]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_SCHEDULED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_TRIGGER_UNSPECIFIED: JobTrigger
JOB_TRIGGER_NEW_EXAMPLES: JobTrigger
JOB_TRIGGER_QUALITY_ALERT: JobTrigger
JOB_TRIGGER_SCHEDULE: JobTrigger
JOB_TRIGGER_MANUAL: JobTrigger

class FineTuneJobUpdated(_message.Message):
    __slots__ = ("meta", "job_id", "state", "trigger", "base_model", "dataset_version", "parameters", "metrics", "artifact_uri", "error")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_URI_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    job_id: str
    state: JobState
    trigger: JobTrigger
    base_model: str
    dataset_version: str
    parameters: _containers.ScalarMap[str, str]
    metrics: _containers.ScalarMap[str, float]
    artifact_uri: str
    error: str
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., trigger: _Optional[_Union[JobTrigger, str]] = ..., base_model: _Optional[str] = ..., dataset_version: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., artifact_uri: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ModelVersionPromoted(_message.Message):
    __slots__ = ("meta", "model_name", "model_version", "previous_version", "traffic_share", "job_id", "eval_metrics", "scope_tenant_id")
    class EvalMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_SHARE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EVAL_METRICS_FIELD_NUMBER: _ClassVar[int]
    SCOPE_TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    model_name: str
    model_version: str
    previous_version: str
    traffic_share: float
    job_id: str
    eval_metrics: _containers.ScalarMap[str, float]
    scope_tenant_id: str
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., previous_version: _Optional[str] = ..., traffic_share: _Optional[float] = ..., job_id: _Optional[str] = ..., eval_metrics: _Optional[_Mapping[str, float]] = ..., scope_tenant_id: _Optional[str] = ...) -> None: ...

class ModelVersionRolledBack(_message.Message):
    __slots__ = ("meta", "model_name", "model_version", "restored_version", "reason", "scope_tenant_id")
    META_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESTORED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SCOPE_TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    model_name: str
    model_version: str
    restored_version: str
    reason: str
    scope_tenant_id: str
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., restored_version: _Optional[str] = ..., reason: _Optional[str] = ..., scope_tenant_id: _Optional[str] = ...) -> None: ...
