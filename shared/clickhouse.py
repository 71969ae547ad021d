"""ClickHouse access with one DDL and one SQL for both engines.

- Embedded (default): the chdb engine in-process. Only one process may open a chdb path, so the
  monitor owns it and serves reads to others (../shared/NOTES.md).
- Server: clickhouse-connect over HTTP when a URL is configured (production).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol


class ClickHouse(Protocol):
    def command(self, sql: str) -> None:
        """Run DDL or a statement without result rows."""

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a SELECT; parameters use ClickHouse's {name:Type} placeholders."""

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Append rows to a table."""

    def close(self) -> None: ...


class ChdbClickHouse:
    """The ClickHouse engine in this process (chdb), data persisted at `path`."""

    def __init__(self, path: Path) -> None:
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        self._session = session.Session(str(path))

    def command(self, sql: str) -> None:
        self._session.query(sql)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        result = self._session.query(sql, "JSONCompact", params=parameters or None)
        text = str(result)
        if not text.strip():
            return []
        return [tuple(row) for row in json.loads(text)["data"]]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        body = "\n".join(json.dumps(dict(zip(columns, row, strict=True)), default=str) for row in rows)
        self._session.query(f"INSERT INTO {table} FORMAT JSONEachRow\n{body}")

    def close(self) -> None:
        self._session.close()


class ServerClickHouse:
    """A ClickHouse server through clickhouse-connect (HTTP interface)."""

    def __init__(self, url: str, username: str = "default", password: str = "") -> None:
        import clickhouse_connect

        self._client = clickhouse_connect.get_client(dsn=url, username=username, password=password)

    def command(self, sql: str) -> None:
        self._client.command(sql)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._client.query(sql, parameters=parameters).result_rows]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._client.insert(table, [list(r) for r in rows], column_names=list(columns))

    def close(self) -> None:
        self._client.close()


def open_clickhouse(url: str, embedded_path: Path) -> ClickHouse:
    """The server at `url` when one is configured, else the embedded engine at `embedded_path`."""
    if url:
        return ServerClickHouse(url)
    return ChdbClickHouse(embedded_path)
