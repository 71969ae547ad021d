"""`llmops ingest PATH...`: send files to the gateway's Ingest RPC and wait until each is indexed."""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from llmops.api.v1 import ingest_service_pb2 as ingest_pb
from llmops.api.v1 import ingest_service_pb2_grpc as ingest_grpc
from llmops.ingest.v1.document_pb2 import Document
from tqdm import tqdm

SUFFIXES = {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf"}


def discover(paths: Iterable[Path]) -> Iterator[tuple[Path, str]]:
    """(file, document id) pairs; a directory contributes its supported files, ids relative to it."""
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES):
                yield file.absolute(), file.relative_to(path).as_posix()
        else:
            yield path.absolute(), path.name


@dataclass
class IngestReport:
    indexed: int = 0
    unchanged: int = 0
    chunks: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


async def ingest_files(
    files: list[tuple[Path, str]],
    *,
    target: str,
    api_key: str,
    concurrency: int = 4,
    timeout_s: float = 120.0,
    show_progress: bool = True,
) -> IngestReport:
    report = IngestReport()
    semaphore = asyncio.Semaphore(concurrency)
    metadata = (("x-api-key", api_key),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ingest_grpc.IngestServiceStub(channel)
        with tqdm(total=len(files), desc="ingesting", unit="doc", disable=not show_progress) as bar:

            async def one(path: Path, document_id: str) -> None:
                async with semaphore:
                    content = await asyncio.to_thread(path.read_bytes)
                    document = Document(
                        document_id=document_id,
                        source_uri=path.as_uri(),  # absolute: discover() resolved it
                        content=content,
                        metadata={"filename": path.name, "mime": mimetypes.guess_type(path.name)[0] or ""},
                    )
                    try:
                        response = await stub.Ingest(
                            ingest_pb.IngestRequest(document=document, wait_indexed=True),
                            metadata=metadata,
                            timeout=timeout_s,
                        )
                    except grpc.aio.AioRpcError as exc:
                        report.failed.append((document_id, f"{exc.code().name}: {exc.details()}"))
                    else:
                        report.unchanged += response.unchanged
                        report.indexed += not response.unchanged
                        report.chunks += response.chunk_count
                    bar.update(1)

            await asyncio.gather(*(one(path, doc_id) for path, doc_id in files))
    return report


def resolve_api_key(explicit: str | None, state_dir: Path) -> str:
    """--api-key, else $LLMOPS_API_KEY, else the demo key `llmops up` created."""
    if explicit:
        return explicit
    if env := os.environ.get("LLMOPS_API_KEY"):
        return env
    demo = state_dir / "demo.key"
    if demo.exists():
        return demo.read_text().strip()
    raise SystemExit(
        "no API key: pass --api-key, set LLMOPS_API_KEY, or run `llmops up` to create a demo key"
    )
