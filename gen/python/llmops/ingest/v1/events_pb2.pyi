from google.protobuf import timestamp_pb2 as _timestamp_pb2
from llmops.common.v1 import event_meta_pb2 as _event_meta_pb2
from llmops.ingest.v1 import document_pb2 as _document_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DocumentIngestRequested(_message.Message):
    __slots__ = ("meta", "document")
    META_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    document: _document_pb2.Document
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., document: _Optional[_Union[_document_pb2.Document, _Mapping]] = ...) -> None: ...

class ChunksEmbedded(_message.Message):
    __slots__ = ("meta", "document_id", "content_sha256", "embedding_model", "chunks", "requested_at")
    META_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    document_id: str
    content_sha256: str
    embedding_model: str
    chunks: _containers.RepeatedCompositeFieldContainer[_document_pb2.EmbeddedChunk]
    requested_at: _timestamp_pb2.Timestamp
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., document_id: _Optional[str] = ..., content_sha256: _Optional[str] = ..., embedding_model: _Optional[str] = ..., chunks: _Optional[_Iterable[_Union[_document_pb2.EmbeddedChunk, _Mapping]]] = ..., requested_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DocumentIndexed(_message.Message):
    __slots__ = ("meta", "document_id", "content_sha256", "chunk_count", "unchanged")
    META_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    document_id: str
    content_sha256: str
    chunk_count: int
    unchanged: bool
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., document_id: _Optional[str] = ..., content_sha256: _Optional[str] = ..., chunk_count: _Optional[int] = ..., unchanged: bool = ...) -> None: ...

class DocumentDeleteRequested(_message.Message):
    __slots__ = ("meta", "document_id")
    META_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    document_id: str
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., document_id: _Optional[str] = ...) -> None: ...

class DocumentDeleted(_message.Message):
    __slots__ = ("meta", "document_id", "chunk_count")
    META_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    document_id: str
    chunk_count: int
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., document_id: _Optional[str] = ..., chunk_count: _Optional[int] = ...) -> None: ...

class DocumentIngestFailed(_message.Message):
    __slots__ = ("meta", "document_id", "reason", "failed_stage")
    META_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FAILED_STAGE_FIELD_NUMBER: _ClassVar[int]
    meta: _event_meta_pb2.EventMeta
    document_id: str
    reason: str
    failed_stage: str
    def __init__(self, meta: _Optional[_Union[_event_meta_pb2.EventMeta, _Mapping]] = ..., document_id: _Optional[str] = ..., reason: _Optional[str] = ..., failed_stage: _Optional[str] = ...) -> None: ...
