"""Per-tenant redaction of the free text the monitor stores (questions, answers, feedback text).

- store: the text as it came;
- hash: "sha256:<hex>" of the text (HMAC-SHA256 with the configured salt when there is one), so equal
  texts can still be grouped and counted without being readable;
- drop: nothing (an empty string).

Quality signals are computed from the text in memory before redaction, so a tenant whose text is
dropped still gets groundedness scores and alerts.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

Mode = Literal["store", "hash", "drop"]
MODES: tuple[Mode, ...] = ("store", "hash", "drop")


class RedactionPolicy:
    def __init__(
        self, default: Mode = "store", tenants: Mapping[str, Mode] | None = None, salt: bytes = b""
    ) -> None:
        for mode in [default, *(tenants or {}).values()]:
            if mode not in MODES:
                raise ValueError(f"unknown redaction mode {mode!r}; use one of {', '.join(MODES)}")
        self.default: Mode = default
        self.tenants: dict[str, Mode] = dict(tenants or {})
        self._salt = salt

    @property
    def salted(self) -> bool:
        """Whether hashed text is an HMAC with a salt (a secret)."""
        return bool(self._salt)

    def mode(self, tenant_id: str) -> Mode:
        return self.tenants.get(tenant_id, self.default)

    def apply(self, tenant_id: str, text: str) -> str:
        """`text` as the tenant's policy stores it."""
        mode = self.mode(tenant_id)
        if mode == "store":
            return text
        if mode == "drop" or not text:
            return ""
        data = text.encode("utf-8")
        digest = (
            hmac.new(self._salt, data, hashlib.sha256).hexdigest()
            if self._salt
            else hashlib.sha256(data).hexdigest()
        )
        return f"sha256:{digest}"
