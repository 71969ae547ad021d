from llmops.ingest.v1 import document_pb2 as _document_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestRequest(_message.Message):
    __slots__ = ("document", "wait_indexed")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    WAIT_INDEXED_FIELD_NUMBER: _ClassVar[int]
    document: _document_pb2.Document
    wait_indexed: bool
    def __init__(self, document: _Optional[_Union[_document_pb2.Document, _Mapping]] = ..., wait_indexed: bool = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("correlation_id", "document_id", "content_sha256", "chunk_count", "unchanged")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    document_id: str
    content_sha256: str
    chunk_count: int
    unchanged: bool
    def __init__(self, correlation_id: _Optional[str] = ..., document_id: _Optional[str] = ..., content_sha256: _Optional[str] = ..., chunk_count: _Optional[int] = ..., unchanged: bool = ...) -> None: ...

class DeleteDocumentRequest(_message.Message):
    __slots__ = ("document_id",)
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    def __init__(self, document_id: _Optional[str] = ...) -> None: ...

class DeleteDocumentResponse(_message.Message):
    __slots__ = ("correlation_id",)
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    def __init__(self, correlation_id: _Optional[str] = ...) -> None: ...
