"""API keys: sent as `x-api-key` gRPC metadata, stored only as SHA-256 hashes, mapped to a tenant."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import grpc

from shared.errors import PermanentError
from shared.grpc_errors import abort
from shared.tenants import TenantRegistry

API_KEY_HEADER = "x-api-key"


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, hashed: dict[str, str]) -> None:
        self._tenant_by_hash = dict(hashed)

    @classmethod
    def load(cls, path: Path) -> ApiKeys:
        if not path.exists():
            return cls({})
        data = json.loads(path.read_text())
        return cls({str(k): str(v) for k, v in data.items()})

    def tenant_for(self, api_key: str) -> str | None:
        return self._tenant_by_hash.get(hash_key(api_key))

    async def authenticate(self, context: grpc.aio.ServicerContext) -> str:
        """The caller's tenant, or abort with UNAUTHENTICATED."""
        metadata = dict(context.invocation_metadata() or ())
        api_key = metadata.get(API_KEY_HEADER)
        if not isinstance(api_key, str) or not api_key:
            await abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                f"missing {API_KEY_HEADER} metadata",
                reason="API_KEY_MISSING",
            )
        tenant = self.tenant_for(str(api_key))
        if tenant is None:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, "invalid API key", reason="API_KEY_INVALID")
        return str(tenant)


class Caller:
    """Who is calling: the tenant of the call's API key, which must be a tenant this deployment serves."""

    def __init__(self, api_keys: ApiKeys, tenants: TenantRegistry) -> None:
        self.api_keys = api_keys
        self.tenants = tenants

    async def tenant(self, context: grpc.aio.ServicerContext) -> str:
        tenant = await self.api_keys.authenticate(context)
        try:
            return self.tenants.check(tenant)
        except PermanentError as exc:
            await abort(context, grpc.StatusCode.PERMISSION_DENIED, str(exc), reason="TENANT_NOT_SERVED")


def issue_key(path: Path, tenant_id: str) -> str:
    """Create a new key for `tenant_id`, record its hash in `path`, return the key (shown once)."""
    api_key = f"llmops_{secrets.token_urlsafe(24)}"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[hash_key(api_key)] = tenant_id
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    path.chmod(0o600)
    return api_key
