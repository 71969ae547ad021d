from llmops.common.v1 import event_meta_pb2 as _event_meta_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_UP: _ClassVar[Verdict]
    VERDICT_DOWN: _ClassVar[Verdict]
VERDICT_UNSPECIFIED: Verdict
VERDICT_UP: Verdict
VERDICT_DOWN: Verdict

class FeedbackRecorded(_message.Message):
    __slots__ = ("meta", "verdict", "rating", "correction", "comment")
    META_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    verdict: Verdict
    rating: int
    correction: str
    comment: str
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., rating: _Optional[int] = ..., correction: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...
