"""The retriever process: FastStream app, gRPC health and reflection, metrics.

Its handlers arrive with the issue that gives the retriever its capability; until then it runs
the shared runtime only (bus connection, health, metrics), so deployments can already wire it.
"""

from __future__ import annotations

from faststream import FastStream

from services.retriever.settings import RetrieverSettings
from shared.service import ServiceRuntime


def create_app(settings: RetrieverSettings | None = None) -> FastStream:
    runtime = ServiceRuntime(settings or RetrieverSettings())
    return runtime.app()
