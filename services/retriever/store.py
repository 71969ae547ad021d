"""The retriever's chunk store: one multi-tenant Weaviate collection, hybrid (BM25 + vector) search.

Every tenant is a Weaviate tenant (its own shard): a query or a delete names one tenant and can only
ever see that tenant's objects. Tenants are created explicitly (`ensure_tenant`), never implicitly by
a write, so a typo in a tenant id cannot silently create a new, empty tenant.

Objects have deterministic ids, uuid5("{tenant}/{document}/{chunk_index}"), so replaying an ingest
event overwrites instead of duplicating. An update writes the new chunks first and then deletes what
is left of the old version; `document_sha256` reports a hash only when every stored chunk of the
document carries it and the document is complete, so a crash between the two steps makes the next
delivery re-ingest the document instead of skipping it.

Deletes leave a record in a second collection (`<collection>Deletions`, same tenants): the document
and when its delete was requested. An ingest requested before that time that is still on its way
(chunks being embedded while the delete ran) is refused by `deleted_since`, so a delete wins over the
ingests it follows whatever order their events reach the retriever in.

Failures are sorted for the event handlers: transient ones (connection refused, timeouts, gRPC
UNAVAILABLE, HTTP 5xx) are retried here within a small budget and then surface as RetryableError;
requests Weaviate rejects (bad vector dimension, malformed filter) surface as PermanentError.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
import httpx
import weaviate
from llmops.ingest.v1.document_pb2 import EmbeddedChunk
from llmops.query.v1.query_pb2 import RetrievalOptions, RetrievedChunk
from weaviate.classes.config import (
    Configure,
    DataType,
    Property,
    Tokenization,
    VectorDistances,
)
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter, HybridFusion, MetadataQuery
from weaviate.classes.tenants import Tenant
from weaviate.collections.classes.batch import BatchObjectReturn
from weaviate.exceptions import (
    InsufficientPermissionsError,
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateClosedClientError,
    WeaviateConnectionError,
    WeaviateGRPCUnavailableError,
    WeaviateRetryError,
    WeaviateTimeoutError,
)
from weaviate.util import generate_uuid5

from services.retriever.domain import MAX_TOP_K
from shared.errors import PermanentError, RetryableError, is_transient
from shared.retry import retry_transient

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_COLLECTION = "Chunk"
TENANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_TOP_K = 5
DEFAULT_ALPHA = 0.5  # when the request leaves alpha unset: BM25 and vector weigh the same
# Weaviate returns (and batch-deletes) at most QUERY_MAXIMUM_RESULTS = 10,000 objects per request;
# a document is kept within one such page so its consistency check reads it whole.
MAX_CHUNKS_PER_DOCUMENT = 10_000
INSERT_BATCH_SIZE = 200  # objects per gRPC BatchObjects request (~2 KB of vector each at dim 384)

DELETIONS_SUFFIX = "Deletions"  # the collection of delete records beside the chunk collection


def deletions_collection(collection: str) -> str:
    return f"{collection}{DELETIONS_SUFFIX}"


# What the store returns for a hit: the chunk and the properties it is rebuilt from.
RETURN_PROPERTIES = ["chunk_id", "document_id", "text", "source_uri", "metadata_json"]


def _keyword(name: str, data_type: DataType = DataType.TEXT) -> Property:
    """An exact-match property: whole-field tokenization, filterable, not part of BM25."""
    return Property(
        name=name,
        data_type=data_type,
        tokenization=Tokenization.FIELD,
        index_filterable=True,
        index_searchable=False,
    )


SCHEMA_PROPERTIES: list[Property] = [
    _keyword("chunk_id"),
    _keyword("document_id"),
    Property(name="chunk_index", data_type=DataType.INT, index_filterable=True, index_range_filters=True),
    # How many chunks the document version has: lets document_sha256 detect a half-written document.
    Property(name="chunk_count", data_type=DataType.INT, index_filterable=False, index_range_filters=False),
    Property(
        name="text",
        data_type=DataType.TEXT,
        tokenization=Tokenization.WORD,
        index_searchable=True,
        index_filterable=False,
    ),
    _keyword("source_uri"),
    _keyword("content_sha256"),
    _keyword("metadata_pairs", DataType.TEXT_ARRAY),
    Property(
        name="metadata_json",
        data_type=DataType.TEXT,
        index_filterable=False,
        index_searchable=False,
    ),
]

DELETION_PROPERTIES: list[Property] = [
    _keyword("document_id"),
    # When the delete was requested, in microseconds since the epoch (its event's meta.occurred_at);
    # range-indexed so records past their retention are pruned with one filter.
    Property(name="deleted_at_us", data_type=DataType.INT, index_filterable=True, index_range_filters=True),
]
MULTI_TENANCY = Configure.multi_tenancy(enabled=True, auto_tenant_creation=False, auto_tenant_activation=True)


# ---------------------------------------------------------------------------------------------------
# Failure classification


_TRANSIENT_GRPC_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
_TRANSIENT_GRPC_NUMBERS = frozenset(code.value[0] for code in _TRANSIENT_GRPC_CODES)
_TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429})
# Substrings of error texts (client wrappers, gRPC details, per-object batch errors) that mean the
# server or the network was briefly unable, not that the request is wrong.
_TRANSIENT_MARKERS = (
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "connection refused",
    "connection reset",
    "failed to connect",
    "deadline exceeded",
    "timed out",
    "i/o timeout",
    "context canceled",
    "too many requests",
    "shutting down",
    "read-only",
    "readonly",
    "not ready",
    "no read replica",  # Weaviate right after a restart, before its shards are loaded
    "temporarily",
)


def _has_transient_marker(text: str) -> bool:
    lowered = text.lower()
    return any(marker.lower() in lowered for marker in _TRANSIENT_MARKERS)


_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    WeaviateConnectionError,
    WeaviateTimeoutError,
    WeaviateRetryError,  # the client's own gRPC UNAVAILABLE retries ran out
    WeaviateGRPCUnavailableError,
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


def _status_is_transient(code: int) -> bool:
    if code < 100:  # UnexpectedStatusCodeError raised for a gRPC call carries the gRPC code number
        return code in _TRANSIENT_GRPC_NUMBERS
    return code >= 500 or code in _TRANSIENT_HTTP_STATUSES


def _rpc_is_transient(exc: grpc.RpcError) -> bool:
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    return code in _TRANSIENT_GRPC_CODES or _has_transient_marker(str(details or ""))


def _classify_one(exc: BaseException) -> bool | None:
    """True/False when this exception alone decides; None to look at its cause."""
    if isinstance(exc, PermanentError | InsufficientPermissionsError | WeaviateClosedClientError):
        return False
    if is_transient(exc) or isinstance(exc, _TRANSIENT_TYPES):
        # is_transient: RetryableError, ConnectionError, TimeoutError (asyncio.timeout included)
        return True
    if isinstance(exc, UnexpectedStatusCodeError):
        return _status_is_transient(exc.status_code)
    if isinstance(exc, grpc.RpcError):
        return _rpc_is_transient(exc)
    if isinstance(exc, WeaviateBaseError) and _has_transient_marker(str(exc)):
        # WeaviateQueryError and friends carry only the server's text for gRPC failures.
        return True
    return None


def is_weaviate_transient(exc: BaseException) -> bool:
    """True when retrying the same Weaviate call later may succeed.

    Looks through the exception's cause chain: the client wraps gRPC errors (AioRpcError with
    UNAVAILABLE), httpx connection errors and its own retry exhaustion in its own exception types.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        verdict = _classify_one(current)
        if verdict is not None:
            return verdict
        current = current.__cause__ or current.__context__
    return False


def _batch_failure(
    operation: str, errors: Iterable[str], total: int, tenant_id: str, document_id: str
) -> Exception:
    """The error to raise for per-object batch failures: retryable if any of them looks transient."""
    messages = sorted(set(errors))
    summary = f"{operation} {tenant_id}/{document_id}: {len(messages)} distinct error(s) in {total} objects: "
    summary += "; ".join(messages[:3])
    if any(_has_transient_marker(message) for message in messages):
        return RetryableError(summary)
    return PermanentError(summary)


# ---------------------------------------------------------------------------------------------------
# Encoding helpers


def validate_tenant_id(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise PermanentError(f"invalid tenant id {tenant_id!r}: must match {TENANT_ID_PATTERN.pattern}")
    return tenant_id


def metadata_pair(key: str, value: str) -> str:
    """Encode one metadata entry as "key=value"; `\\` and `=` in the key are escaped, so it is injective."""
    escaped = key.replace("\\", "\\\\").replace("=", "\\=")
    return f"{escaped}={value}"


def chunk_uuid(tenant_id: str, document_id: str, chunk_index: int) -> str:
    return str(generate_uuid5(f"{tenant_id}/{document_id}/{chunk_index}"))


def _document_filter(document_id: str) -> Any:
    return Filter.by_property("document_id").equal(document_id)


@dataclass(frozen=True)
class SearchHit:
    """A search result with the Weaviate object id it came from (the chunk alone does not carry it)."""

    uuid: str
    chunk: RetrievedChunk


@dataclass(frozen=True)
class RetryBudget:
    """How long a public call keeps retrying transient failures before raising RetryableError.

    `attempt_timeout_s` bounds each attempt: on gRPC UNAVAILABLE the client itself retries with
    exponential sleeps (up to ~63 s for a search), which would otherwise outlast the whole budget.
    """

    attempts: int = 4
    max_delay_s: float = 10.0
    attempt_timeout_s: float = 20.0
    initial_wait_s: float = 0.1
    max_wait_s: float = 2.0


@dataclass(frozen=True)
class IndexSettings:
    """HNSW settings of the collection (applied when it is created). ef=-1: dynamic ef (server default)."""

    ef: int = -1
    ef_construction: int = 128
    max_connections: int = 32


async def call_with_retry(
    budget: RetryBudget,
    operation: str,
    fn: Callable[[], Awaitable[T]],
    *,
    within_s: float | None = None,
) -> T:
    """Run `fn` within the retry budget; map what is left to RetryableError / PermanentError.

    Transient failures are retried (each attempt bounded by `attempt_timeout_s`); when the budget
    is spent they surface as RetryableError. `within_s` (a caller's deadline, in seconds from now)
    replaces the budget: attempts go on until it, each cut to the time left. Other Weaviate errors
    mean the request itself is wrong and become PermanentError. Anything else (a bug) propagates
    unchanged.
    """
    loop = asyncio.get_running_loop()
    ends_at = None if within_s is None else loop.time() + within_s

    async def attempt() -> T:
        timeout_s = budget.attempt_timeout_s
        if ends_at is not None:
            timeout_s = min(timeout_s, max(ends_at - loop.time(), 0.0))
        async with asyncio.timeout(timeout_s):
            return await fn()

    retrying = retry_transient(
        attempts=budget.attempts,
        max_delay_s=budget.max_delay_s,
        initial_wait_s=budget.initial_wait_s,
        max_wait_s=budget.max_wait_s,
        is_retryable=is_weaviate_transient,
        until_s=within_s,
    )(attempt)
    try:
        return await retrying()
    except (PermanentError, RetryableError):
        raise
    except Exception as exc:
        if is_weaviate_transient(exc):
            raise RetryableError(f"weaviate {operation} failed after retries: {exc!r}") from exc
        if isinstance(exc, WeaviateBaseError):
            raise PermanentError(f"weaviate rejected {operation}: {exc}") from exc
        raise


# ---------------------------------------------------------------------------------------------------
# The store


class ChunkStore:
    """Chunks of every tenant in one multi-tenant Weaviate collection (async)."""

    def __init__(
        self,
        client: weaviate.WeaviateAsyncClient,
        collection: str = DEFAULT_COLLECTION,
        *,
        retry: RetryBudget | None = None,
        index: IndexSettings | None = None,
    ) -> None:
        self._client = client
        self._name = collection
        self._collection = client.collections.use(collection)
        self._deletions = client.collections.use(deletions_collection(collection))
        self._retry = retry or RetryBudget()
        self._index = index or IndexSettings()
        self._tenants: set[str] = set()
        self._deletion_tenants: set[str] = set()

    @property
    def name(self) -> str:
        return self._name

    @property
    def client(self) -> weaviate.WeaviateAsyncClient:
        return self._client

    # -- retry plumbing ------------------------------------------------------------------------------

    async def _call(
        self, operation: str, fn: Callable[[], Awaitable[T]], *, within_s: float | None = None
    ) -> T:
        return await call_with_retry(self._retry, operation, fn, within_s=within_s)

    # -- schema and tenants --------------------------------------------------------------------------

    async def ensure_schema(self) -> None:
        """Create the collection if it is missing; add properties an older version of it lacks."""
        await self._call("ensure_schema", self._ensure_schema)

    async def _ensure_schema(self) -> None:
        created = await self._create_collection(
            self._name,
            vector_config=Configure.Vectors.self_provided(
                vector_index_config=Configure.VectorIndex.hnsw(
                    distance_metric=VectorDistances.COSINE,
                    ef=self._index.ef,
                    ef_construction=self._index.ef_construction,
                    max_connections=self._index.max_connections,
                )
            ),
            properties=SCHEMA_PROPERTIES,
        )
        if not created:
            config = await self._collection.config.get()
            if not config.multi_tenancy_config.enabled:
                raise PermanentError(f"Weaviate collection {self._name} exists without multi-tenancy")
            existing = {prop.name for prop in config.properties}
            for prop in SCHEMA_PROPERTIES:
                if prop.name not in existing:
                    await self._collection.config.add_property(prop)
                    log.info("added property %s to Weaviate collection %s", prop.name, self._name)
        # Delete records carry no vectors: a flat index keeps them out of HNSW.
        await self._create_collection(
            deletions_collection(self._name),
            vector_config=Configure.Vectors.self_provided(vector_index_config=Configure.VectorIndex.flat()),
            properties=DELETION_PROPERTIES,
        )

    async def _create_collection(self, name: str, **config: Any) -> bool:
        """Create a multi-tenant collection unless it exists; True if this call created it."""
        if await self._client.collections.exists(name):
            return False
        try:
            await self._client.collections.create(name, multi_tenancy_config=MULTI_TENANCY, **config)
        except UnexpectedStatusCodeError as exc:
            # Another replica created it between our check and our create.
            if exc.status_code != 422 or not await self._client.collections.exists(name):
                raise
            return False
        log.info("created Weaviate collection %s", name)
        return True

    async def ensure_tenant(self, tenant_id: str) -> None:
        """Create the tenant if needed (idempotent); remembered after the first success."""
        validate_tenant_id(tenant_id)
        if tenant_id in self._tenants:
            return
        await self._call("ensure_tenant", lambda: self._ensure_tenant(tenant_id))

    async def _ensure_tenant(self, tenant_id: str) -> None:
        await _create_tenant(self._collection, self._tenants, tenant_id)

    async def _tenant_exists(self, tenant_id: str) -> bool:
        return await _tenant_known(self._collection, self._tenants, tenant_id)

    # -- documents -----------------------------------------------------------------------------------

    async def document_sha256(self, tenant_id: str, document_id: str) -> str | None:
        """The content hash of the stored document, or None if absent or not completely written."""
        validate_tenant_id(tenant_id)
        return await self._call("document_sha256", lambda: self._document_sha256(tenant_id, document_id))

    async def _document_sha256(self, tenant_id: str, document_id: str) -> str | None:
        return (await self._stored_hashes(tenant_id, [document_id])).get(document_id)

    async def upsert_document(
        self,
        tenant_id: str,
        document_id: str,
        content_sha256: str,
        chunks: Sequence[EmbeddedChunk],
    ) -> int:
        """Store the document's chunks (replacing any earlier version); returns how many are stored."""
        validate_tenant_id(tenant_id)
        objects = self._data_objects(tenant_id, document_id, content_sha256, chunks)
        return await self._call(
            "upsert_document",
            lambda: self._upsert(tenant_id, document_id, content_sha256, objects),
        )

    def _data_objects(
        self,
        tenant_id: str,
        document_id: str,
        content_sha256: str,
        chunks: Sequence[EmbeddedChunk],
    ) -> list[DataObject[dict[str, Any], None]]:
        if not document_id:
            raise PermanentError("upsert_document: empty document id")
        if not content_sha256:
            raise PermanentError(f"upsert_document {document_id}: empty content_sha256")
        if len(chunks) > MAX_CHUNKS_PER_DOCUMENT:
            raise PermanentError(
                f"document {document_id} has {len(chunks)} chunks, more than {MAX_CHUNKS_PER_DOCUMENT}"
            )
        indexes = sorted(embedded.chunk.chunk_index for embedded in chunks)
        if indexes != list(range(len(chunks))):
            raise PermanentError(f"document {document_id}: chunk indexes must be 0..{len(chunks) - 1}")
        dims = {len(embedded.vector) for embedded in chunks}
        if 0 in dims or len(dims) > 1:
            raise PermanentError(f"document {document_id}: chunk vectors of dimensions {sorted(dims)}")
        objects: list[DataObject[dict[str, Any], None]] = []
        for embedded in chunks:
            chunk = embedded.chunk
            if chunk.document_id and chunk.document_id != document_id:
                raise PermanentError(
                    f"chunk {chunk.chunk_id} belongs to document {chunk.document_id}, not {document_id}"
                )
            vector = list(embedded.vector)
            if not all(math.isfinite(x) for x in vector):
                raise PermanentError(f"chunk {chunk.chunk_id} of {document_id}: vector has NaN or inf")
            metadata = dict(sorted(chunk.metadata.items()))
            objects.append(
                DataObject(
                    uuid=chunk_uuid(tenant_id, document_id, chunk.chunk_index),
                    vector=vector,
                    properties={
                        "chunk_id": chunk.chunk_id or f"{document_id}:{chunk.chunk_index}",
                        "document_id": document_id,
                        "chunk_index": chunk.chunk_index,
                        "chunk_count": len(chunks),
                        "text": chunk.text,
                        "source_uri": chunk.source_uri,
                        "content_sha256": content_sha256,
                        "metadata_pairs": [metadata_pair(k, v) for k, v in metadata.items()],
                        "metadata_json": json.dumps(metadata, ensure_ascii=False),
                    },
                )
            )
        return objects

    async def _upsert(
        self,
        tenant_id: str,
        document_id: str,
        content_sha256: str,
        objects: list[DataObject[dict[str, Any], None]],
    ) -> int:
        await self._insert(tenant_id, objects, document_id)
        # The new version is complete: drop what is left of older ones (more chunks, other hash).
        await self._delete_stale(tenant_id, document_id, content_sha256, len(objects))
        return len(objects)

    async def _insert(
        self, tenant_id: str, objects: list[DataObject[dict[str, Any], None]], label: str
    ) -> None:
        """Write chunk objects, creating the tenant first if needed (`_insert_objects`)."""
        await self._ensure_tenant(tenant_id)
        await _insert_objects(self._collection, tenant_id, objects, label)

    async def _delete_stale(self, tenant_id: str, document_id: str, content_sha256: str, count: int) -> int:
        """Delete the document's chunks that the version (hash, chunk count) just written does not own."""
        stale = _document_filter(document_id) & (
            Filter.by_property("chunk_index").greater_or_equal(count)
            | Filter.by_property("content_sha256").not_equal(content_sha256)
        )
        removed = await self._delete_where(tenant_id, document_id, stale)
        if removed:
            log.info("replaced %s/%s: %d stale chunks removed", tenant_id, document_id, removed)
        return removed

    async def upsert_documents(
        self, tenant_id: str, documents: Sequence[tuple[str, str, Sequence[EmbeddedChunk]]]
    ) -> dict[str, tuple[int, bool] | PermanentError]:
        """Index several documents of one tenant with a few calls instead of a few per document.

        `documents` holds (document_id, content_sha256, chunks) with distinct ids. Returns per id
        (chunks stored, unchanged) or the PermanentError that rejected that document alone. One
        query finds the stored hashes, unchanged documents are skipped, the chunks of all others go
        in shared insert batches, and only documents that existed before get a stale-chunk delete.
        """
        validate_tenant_id(tenant_id)
        outcomes: dict[str, tuple[int, bool] | PermanentError] = {}
        prepared: dict[str, tuple[str, list[DataObject[dict[str, Any], None]]]] = {}
        for document_id, sha, chunks in documents:
            try:
                prepared[document_id] = (sha, self._data_objects(tenant_id, document_id, sha, chunks))
            except PermanentError as exc:
                outcomes[document_id] = exc
        if prepared:
            stored = await self._call("stored_hashes", lambda: self._stored_hashes(tenant_id, list(prepared)))
            changed = {doc: item for doc, item in prepared.items() if stored.get(doc) != item[0]}
            for doc, (_, objects) in prepared.items():
                outcomes[doc] = (len(objects), doc not in changed)
            if changed:
                await self._call("upsert_documents", lambda: self._upsert_many(tenant_id, changed, stored))
        return outcomes

    async def _stored_hashes(self, tenant_id: str, document_ids: list[str]) -> dict[str, str | None]:
        """document id -> its complete stored hash (None: partially written), for those stored at all."""
        if not await self._tenant_exists(tenant_id):
            return {}
        result = await self._collection.with_tenant(tenant_id).query.fetch_objects(
            filters=Filter.by_property("document_id").contains_any(document_ids),
            # One page; if a batch's documents hold more chunks, the cut-off ones read as partially
            # written and are simply written again.
            limit=MAX_CHUNKS_PER_DOCUMENT,
            return_properties=["document_id", "content_sha256", "chunk_count"],
        )
        seen: dict[str, list[tuple[Any, Any]]] = {}
        for obj in result.objects:
            seen.setdefault(str(obj.properties.get("document_id")), []).append(
                (obj.properties.get("content_sha256"), obj.properties.get("chunk_count"))
            )
        hashes: dict[str, str | None] = {}
        for doc, rows in seen.items():
            complete = len({h for h, _ in rows}) == 1 and {c for _, c in rows} == {len(rows)}
            if not complete:
                log.warning(
                    "document %s/%s is partially written (%d objects, hashes %s, counts %s)",
                    tenant_id,
                    doc,
                    len(rows),
                    len({h for h, _ in rows}),
                    sorted(str(c) for _, c in rows),
                )
            hashes[doc] = str(rows[0][0]) if complete and isinstance(rows[0][0], str) and rows[0][0] else None
        return hashes

    async def _upsert_many(
        self,
        tenant_id: str,
        documents: dict[str, tuple[str, list[DataObject[dict[str, Any], None]]]],
        stored: dict[str, str | None],
    ) -> None:
        objects = [obj for _, objs in documents.values() for obj in objs]
        await self._insert(tenant_id, objects, ",".join(documents))
        for document_id, (sha, objs) in documents.items():
            if document_id in stored:  # only an older version has anything to replace
                await self._delete_stale(tenant_id, document_id, sha, len(objs))

    async def delete_document(self, tenant_id: str, document_id: str) -> int:
        """Delete every chunk of the document; returns how many were deleted (0 if none or no tenant)."""
        validate_tenant_id(tenant_id)
        return await self._call("delete_document", lambda: self._delete_document(tenant_id, document_id))

    async def _delete_document(self, tenant_id: str, document_id: str) -> int:
        if not await self._tenant_exists(tenant_id):
            return 0
        return await self._delete_where(tenant_id, document_id, _document_filter(document_id))

    async def _delete_where(self, tenant_id: str, document_id: str, where: Any) -> int:
        tenant = self._collection.with_tenant(tenant_id)
        deleted = 0
        while True:  # one batch delete removes at most QUERY_MAXIMUM_RESULTS (10,000) objects
            result = await tenant.data.delete_many(where=where, verbose=True)
            deleted += result.successful
            if result.failed:
                errors = (obj.error or "unknown error" for obj in result.objects or [] if not obj.successful)
                raise _batch_failure("delete", errors, result.matches, tenant_id, document_id)
            if result.matches == 0 or result.successful == 0:
                return deleted

    async def record_deletion(
        self,
        tenant_id: str,
        document_id: str,
        deleted_at_us: int,
        deletion_id: str,
        *,
        prune_before_us: int | None = None,
    ) -> None:
        """Remember that the document's delete was requested at `deleted_at_us` (idempotent per
        `deletion_id`, the delete event's id). Recorded before the chunks are deleted, so an ingest that
        writes in between finds it when it checks after its write. Records of the tenant older than
        `prune_before_us` are dropped (no ingest that old can still arrive)."""
        validate_tenant_id(tenant_id)
        await self._call(
            "record_deletion",
            lambda: self._record_deletion(
                tenant_id, document_id, deleted_at_us, deletion_id, prune_before_us
            ),
        )

    async def _record_deletion(
        self,
        tenant_id: str,
        document_id: str,
        deleted_at_us: int,
        deletion_id: str,
        prune_before_us: int | None,
    ) -> None:
        await _create_tenant(self._deletions, self._deletion_tenants, tenant_id)
        properties: dict[str, Any] = {"document_id": document_id, "deleted_at_us": deleted_at_us}
        record = DataObject(
            uuid=generate_uuid5(f"{tenant_id}/{document_id}/{deletion_id}"), properties=properties
        )
        await _insert_objects(self._deletions, tenant_id, [record], document_id)
        if prune_before_us is not None:
            expired = Filter.by_property("deleted_at_us").less_than(prune_before_us)
            pruned = await self._deletions.with_tenant(tenant_id).data.delete_many(where=expired)
            if pruned.successful:
                log.info("pruned %d expired delete records of %s", pruned.successful, tenant_id)

    async def deleted_since(self, tenant_id: str, requested_at_us: Mapping[str, int]) -> set[str]:
        """Those of the documents (id -> when its ingest was requested) whose delete was requested at
        or after that time: their chunks must not be stored."""
        validate_tenant_id(tenant_id)
        if not requested_at_us:
            return set()
        return await self._call("deleted_since", lambda: self._deleted_since(tenant_id, requested_at_us))

    async def _deleted_since(self, tenant_id: str, requested_at_us: Mapping[str, int]) -> set[str]:
        if not await _tenant_known(self._deletions, self._deletion_tenants, tenant_id):
            return set()
        result = await self._deletions.with_tenant(tenant_id).query.fetch_objects(
            filters=Filter.by_property("document_id").contains_any(list(requested_at_us)),
            limit=MAX_CHUNKS_PER_DOCUMENT,  # one page: a document deleted this often is an outlier
            return_properties=["document_id", "deleted_at_us"],
        )
        deleted: set[str] = set()
        for obj in result.objects:
            document_id = str(obj.properties.get("document_id"))
            deleted_at = obj.properties.get("deleted_at_us")
            requested = requested_at_us.get(document_id)
            if requested is not None and isinstance(deleted_at, int | float) and deleted_at >= requested:
                deleted.add(document_id)
        return deleted

    async def count_objects(self, tenant_id: str, document_id: str | None = None) -> int:
        """How many chunks the tenant holds (of one document if given); 0 for an unknown tenant."""
        validate_tenant_id(tenant_id)
        return await self._call("count_objects", lambda: self._count(tenant_id, document_id))

    async def _count(self, tenant_id: str, document_id: str | None) -> int:
        if not await self._tenant_exists(tenant_id):
            return 0
        result = await self._collection.with_tenant(tenant_id).aggregate.over_all(
            filters=_document_filter(document_id) if document_id is not None else None,
            total_count=True,
        )
        return int(result.total_count or 0)

    # -- search --------------------------------------------------------------------------------------

    async def search(
        self,
        tenant_id: str,
        query_text: str,
        query_vector: Sequence[float],
        options: RetrievalOptions,
        *,
        within_s: float | None = None,
    ) -> list[RetrievedChunk]:
        """Hybrid search in one tenant; scores in [0, 1] (relative-score fusion), best first.
        `within_s`: the caller's deadline; transient failures are retried until it rather than
        for the store's own budget."""
        hits = await self.search_hits(tenant_id, query_text, query_vector, options, within_s=within_s)
        return [hit.chunk for hit in hits]

    async def search_hits(
        self,
        tenant_id: str,
        query_text: str,
        query_vector: Sequence[float],
        options: RetrievalOptions,
        *,
        within_s: float | None = None,
    ) -> list[SearchHit]:
        """`search` with the Weaviate object id of every hit.

        alpha is used as given (0 = BM25 only, 1 = vector only; unset: DEFAULT_ALPHA), except that
        without a query vector the search is BM25 only and without query text it is vector only.
        top_k 0 means DEFAULT_TOP_K; more than MAX_TOP_K is capped.
        """
        validate_tenant_id(tenant_id)
        text = query_text.strip()
        vector = [float(x) for x in query_vector]
        if not text and not vector:
            raise PermanentError("search: neither query text nor query vector")
        if vector and not all(math.isfinite(x) for x in vector):
            raise PermanentError("search: query vector has NaN or inf")
        alpha = float(options.alpha) if options.HasField("alpha") else DEFAULT_ALPHA
        if not 0.0 <= alpha <= 1.0:  # NaN fails too
            raise PermanentError(f"search: alpha {options.alpha} is outside [0, 1]")
        if not vector:
            alpha = 0.0
        elif not text:
            alpha = 1.0
        top_k = min(options.top_k or DEFAULT_TOP_K, MAX_TOP_K)
        filters = None
        if options.metadata_filter:
            pairs = [metadata_pair(k, v) for k, v in sorted(options.metadata_filter.items())]
            filters = Filter.by_property("metadata_pairs").contains_all(pairs)
        threshold = float(options.score_threshold)

        async def query() -> list[SearchHit]:
            if not await self._tenant_exists(tenant_id):
                return []
            result = await self._collection.with_tenant(tenant_id).query.hybrid(
                query=text,
                vector=vector or None,
                alpha=alpha,
                fusion_type=HybridFusion.RELATIVE_SCORE,
                query_properties=["text"],
                filters=filters,
                limit=top_k,
                return_metadata=MetadataQuery(score=True),
                return_properties=RETURN_PROPERTIES,
            )
            hits: list[SearchHit] = []
            for obj in result.objects:
                score = float(obj.metadata.score or 0.0)
                if score < threshold:
                    continue
                hits.append(SearchHit(uuid=str(obj.uuid), chunk=_retrieved_chunk(obj.properties, score)))
            hits.sort(key=lambda hit: hit.chunk.score, reverse=True)
            return hits

        return await self._call("search", query, within_s=within_s)

    async def close(self) -> None:
        await self._client.close()


async def _create_tenant(collection: Any, known: set[str], tenant_id: str) -> None:
    """Create the tenant in `collection` unless `known` says it exists (creating one twice is a no-op)."""
    if tenant_id in known:
        return
    await collection.tenants.create([Tenant(name=tenant_id)])
    known.add(tenant_id)


async def _insert_objects(
    collection: Any, tenant_id: str, objects: Sequence[DataObject[dict[str, Any], None]], label: str
) -> None:
    """Write objects of one tenant in gRPC batches; any object error fails the call (RetryableError or
    PermanentError, by `_batch_failure`)."""
    tenant = collection.with_tenant(tenant_id)
    for start in range(0, len(objects), INSERT_BATCH_SIZE):
        batch = objects[start : start + INSERT_BATCH_SIZE]
        result: BatchObjectReturn = await tenant.data.insert_many(batch)
        if result.has_errors or result.errors:
            raise _batch_failure(
                "insert", (error.message for error in result.errors.values()), len(batch), tenant_id, label
            )


async def _tenant_known(collection: Any, known: set[str], tenant_id: str) -> bool:
    """Whether `collection` has the tenant; a yes is remembered in `known` (tenants are not removed)."""
    if tenant_id in known:
        return True
    if await collection.tenants.exists(tenant_id):
        known.add(tenant_id)
        return True
    return False


def _retrieved_chunk(props: Mapping[str, Any], score: float) -> RetrievedChunk:
    raw = props.get("metadata_json") or "{}"
    try:
        loaded = json.loads(raw)
    except json.JSONDecodeError:
        loaded = {}
    metadata = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    return RetrievedChunk(
        chunk_id=str(props.get("chunk_id") or ""),
        document_id=str(props.get("document_id") or ""),
        text=str(props.get("text") or ""),
        source_uri=str(props.get("source_uri") or ""),
        score=min(max(score, 0.0), 1.0),
        metadata=metadata,
    )


async def connect_store(
    http_url: str,
    grpc_port: int,
    collection: str = DEFAULT_COLLECTION,
    *,
    retry: RetryBudget | None = None,
    index: IndexSettings | None = None,
) -> ChunkStore:
    """Connect to Weaviate (REST at `http_url`, gRPC on the same host), then ensure the collection."""
    parts = urlsplit(http_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"invalid Weaviate URL {http_url!r}")
    secure = parts.scheme == "https"
    host = parts.hostname
    http_port = parts.port or (443 if secure else 80)
    budget = retry or RetryBudget()

    async def open_client() -> weaviate.WeaviateAsyncClient:
        client = weaviate.use_async_with_custom(
            http_host=host,
            http_port=http_port,
            http_secure=secure,
            grpc_host=host,
            grpc_port=grpc_port,
            grpc_secure=secure,
            skip_init_checks=False,  # checks the gRPC port too, not just REST
        )
        try:
            async with asyncio.timeout(budget.attempt_timeout_s):
                await client.connect()
        except BaseException:
            await client.close()
            raise
        return client

    client = await call_with_retry(budget, "connect", open_client)
    store = ChunkStore(client, collection, retry=budget, index=index)
    try:
        await store.ensure_schema()
    except BaseException:
        await store.close()
        raise
    return store
