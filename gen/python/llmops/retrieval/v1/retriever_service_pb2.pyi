from llmops.query.v1 import query_pb2 as _query_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchRequest(_message.Message):
    __slots__ = ("tenant_id", "query_text", "query_vector", "options")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_TEXT_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    query_text: str
    query_vector: _containers.RepeatedScalarFieldContainer[float]
    options: _query_pb2.RetrievalOptions
    def __init__(self, tenant_id: _Optional[str] = ..., query_text: _Optional[str] = ..., query_vector: _Optional[_Iterable[float]] = ..., options: _Optional[_Union[_query_pb2.RetrievalOptions, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[_query_pb2.RetrievedChunk]
    def __init__(self, chunks: _Optional[_Iterable[_Union[_query_pb2.RetrievedChunk, _Mapping]]] = ...) -> None: ...
