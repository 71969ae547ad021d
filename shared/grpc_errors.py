"""gRPC errors with machine-readable details.

A failed call carries a `google.rpc.Status` in the `grpc-status-details-bin` trailer (the
standard rich error model) holding an `ErrorInfo`: a stable `reason` and metadata such as the
request's correlation id, so clients can branch on more than the status code and ops can find the
request in the telemetry.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "llmops.dev"


def rich_status(code: grpc.StatusCode, message: str, *, reason: str, **metadata: str) -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata))
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(status)


async def abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, *, reason: str, **metadata: str
) -> NoReturn:
    """End the call with `code`, `message` and an ErrorInfo(reason, metadata) detail."""
    status = rich_status(code, message, reason=reason, **metadata)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort returned")  # it always raises


def error_info(error: grpc.aio.AioRpcError | grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo a failed call carries, if any (client side)."""
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return info
    return None
