"""Which tenants exist. Events for an unknown tenant are rejected (dead-lettered), never stored.

Tenant ids double as Weaviate tenant names, so they follow its rule: 1-64 of [A-Za-z0-9_-].
"""

from __future__ import annotations

import re

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import PermanentError

TENANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class UnknownTenantError(PermanentError):
    """The event names a tenant this deployment does not serve."""


class TenantSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_TENANTS_", extra="ignore")

    known: str = Field(
        default="demo",
        description="Comma-separated tenant ids this deployment serves; '*' accepts any well-formed id.",
    )

    def registry(self) -> TenantRegistry:
        return TenantRegistry({t.strip() for t in self.known.split(",") if t.strip()})


class TenantRegistry:
    def __init__(self, known: set[str]) -> None:
        self._any = "*" in known
        self._known = known - {"*"}

    def check(self, tenant_id: str) -> str:
        """The tenant id if it is served; UnknownTenantError (a PermanentError) otherwise."""
        if not TENANT_ID.fullmatch(tenant_id):
            raise UnknownTenantError(f"tenant id {tenant_id[:80]!r} is malformed (1-64 of A-Z a-z 0-9 _ -)")
        if not self._any and tenant_id not in self._known:
            raise UnknownTenantError(f"unknown tenant {tenant_id!r}")
        return tenant_id
