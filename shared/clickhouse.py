"""ClickHouse access with one DDL and one SQL for both engines.

- Embedded (default): the chdb engine in-process. Only one process may open a chdb path, so the
  monitor owns it and serves reads to others (../shared/NOTES.md).
- Server: clickhouse-connect over HTTP when a URL is configured (production).

Both take the same Python values: query parameters use ClickHouse's `{name:Type}` placeholders and are
formatted by clickhouse-connect's own binder for both engines; inserted rows may hold str, numbers,
None, lists, dicts (Map columns) and timezone-aware datetimes. To get the same Python values back from
both engines, queries should return numbers, strings, arrays and maps (times as epoch numbers, e.g.
`toUnixTimestamp64Milli(t)`), not DateTime values.

A server that cannot be reached raises ClickHouseUnavailable, a RetryableError: a consumer that
writes to ClickHouse then leaves its offsets uncommitted and catches up once the server is back.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from shared.errors import RetryableError

Columns = Sequence[str]
Rows = Sequence[Sequence[Any]]
QuerySettings = Mapping[str, int | str]  # query-level settings of one statement


class ClickHouseUnavailable(RetryableError):
    """The ClickHouse server cannot be reached (or the embedded engine cannot be opened) right now."""


class ClickHouse(Protocol):
    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        """Run DDL or a statement without result rows."""

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a SELECT; parameters use ClickHouse's {name:Type} placeholders."""

    def insert(self, table: str, columns: Columns, rows: Rows, settings: QuerySettings | None = None) -> None:
        """Append rows to a table, with the query-level `settings` given."""

    def insert_protobuf(self, table: str, data: bytes, schema: str, message: str) -> None:
        """Append rows in FORMAT Protobuf: length-delimited `message`s of the proto3 file `schema`
        (its text, with no imports), fields matched to columns by name."""

    def close(self) -> None: ...


# clickhouse-connect's escape_str (binding.must_escape) as one str.translate table: a backslash before
# each of \ ' ` TAB LF. Its own escape_str works a character at a time (~4 us per 36-character id).
_ESCAPES = str.maketrans({c: "\\" + c for c in ("\\", "'", "`", "\t", "\n")})


def sql_string(text: str) -> str:
    """`text` as a ClickHouse string literal, quoted and escaped."""
    return "'" + text.translate(_ESCAPES) + "'"


def settings_clause(settings: QuerySettings | None) -> str:
    """` SETTINGS name = value, ...` for a statement, or '' for none."""
    if not settings:
        return ""
    values = (f"{name} = {sql_string(v) if isinstance(v, str) else int(v)}" for name, v in settings.items())
    return " SETTINGS " + ", ".join(values)


def _bind_value(value: Any) -> str:
    """format_bind_value(value), with a fast path for strings and lists of strings (the same text)."""
    from clickhouse_connect.driver.binding import format_bind_value

    if type(value) is str:
        return value.translate(_ESCAPES)
    if type(value) is list and all(type(v) is str for v in value):
        return "[" + ", ".join(map(sql_string, value)) + "]"
    return str(format_bind_value(value))


def bind_parameters(parameters: dict[str, Any] | None) -> dict[str, str]:
    """Parameter values as the text ClickHouse parses for `{name:Type}` (clickhouse-connect's binder)."""
    return {name: _bind_value(value) for name, value in (parameters or {}).items()}


def _json_value(value: Any) -> Any:
    """JSONEachRow text for values json cannot write as ClickHouse reads them (datetimes in UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _epoch_s(value: datetime) -> float | str:
    """Seconds since the epoch (a naive datetime is taken as UTC, as _json_value does); a time before
    the epoch as _json_value's text."""
    seconds = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()
    return seconds if seconds >= 0 else _json_value(value)


def _float_text(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _finite_safe(value: Any) -> Any:
    """NaN and infinities (in a float, a list of floats or a map to floats) as the text ClickHouse reads
    for them: JSON has no form for them and orjson would write null, which a Float64 column stores as
    0. One C-level sum tells whether a list or map holds any, so finite data costs next to nothing."""
    if type(value) is float:
        return value if math.isfinite(value) else _float_text(value)
    if type(value) is list and value and type(value[0]) is float:
        return value if math.isfinite(sum(value)) else [_finite_safe(v) for v in value]
    if type(value) is dict and value:
        values = value.values()
        if type(next(iter(values))) is float and not math.isfinite(sum(values)):
            return {k: _finite_safe(v) for k, v in value.items()}
    return value


def _json_column(column: list[Any]) -> list[Any]:
    """A column of datetimes as epoch seconds with microseconds (ClickHouse parses the decimal text
    and keeps the column's precision, as from the formatted time, ~10x cheaper than strftime); floats,
    lists and maps with NaN or infinities as ClickHouse's text for them; any other column unchanged. A
    datetime that does not lead its column is still written by _json_value."""
    first = next((v for v in column if v is not None), None)
    if isinstance(first, datetime):
        return [_epoch_s(v) if isinstance(v, datetime) else v for v in column]
    if isinstance(first, float | list | dict):
        return [_finite_safe(v) for v in column]
    return column


def encode_columns(data: list[list[Any]]) -> bytes:
    """The JSONCompactColumns body: orjson (~5x json's C encoder on these batches), datetimes and other
    values JSON has no form for written by _json_value."""
    return orjson.dumps(data, default=_json_value, option=orjson.OPT_PASSTHROUGH_DATETIME)


class ChdbClickHouse:
    """The ClickHouse engine in this process (chdb), data persisted at `path`."""

    def __init__(self, path: Path) -> None:
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        self._path = path.resolve()
        try:
            self._session = session.Session(str(path))
        except Exception as exc:  # another process holds the path, or another path is open here
            raise ClickHouseUnavailable(f"cannot open chdb at {path}: {exc}") from exc

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        self._session.query(sql, params=bind_parameters(parameters) or None)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        params = bind_parameters(parameters)
        result = self._session.query(sql, "JSONCompact", params=params or None)
        text = str(result)
        if not text.strip():
            return []
        return [tuple(row) for row in json.loads(text)["data"]]

    def insert(self, table: str, columns: Columns, rows: Rows, settings: QuerySettings | None = None) -> None:
        """One INSERT of all rows, column-oriented: one JSON document `[[column 1], [column 2], ...]`
        (FORMAT JSONCompactColumns) written by orjson and streamed in with send_insert, so no per-row
        Python encoding and no SQL parsing of the data."""
        if not rows:
            return
        data = [list(column) for column in zip(*rows, strict=True)]
        if len(data) != len(columns):
            raise ValueError(f"{len(columns)} columns but rows of {len(data)} values")
        for i, column in enumerate(data):
            data[i] = _json_column(column)
        body = encode_columns(data)
        with self._session.send_insert(
            f"INSERT INTO {table} ({', '.join(columns)}){settings_clause(settings)}", "JSONCompactColumns"
        ) as inserter:
            inserter.append(body)
            inserter.finish()

    def insert_protobuf(self, table: str, data: bytes, schema: str, message: str) -> None:
        # The schema as a file in the engine's folder: given as a string, the engine would cache it
        # in the process's working directory.
        schema_file = (
            self._path / "format_schemas" / f"{hashlib.sha256(schema.encode()).hexdigest()[:16]}.proto"
        )
        if not schema_file.exists():
            schema_file.parent.mkdir(exist_ok=True)
            partial = schema_file.with_suffix(".tmp")
            partial.write_text(schema)
            partial.replace(schema_file)
        settings = settings_clause({"format_schema": f"{schema_file}:{message}"})
        with self._session.send_insert(f"INSERT INTO {table}{settings}", "Protobuf") as inserter:
            inserter.append(data)
            inserter.finish()

    def close(self) -> None:
        self._session.close()


def _unavailable(exc: BaseException) -> bool:
    """True for failures to reach the server (as opposed to errors in the SQL or the data)."""
    from clickhouse_connect.driver.exceptions import OperationalError

    return isinstance(exc, (OperationalError, ConnectionError, TimeoutError, OSError))


class ServerClickHouse:
    """A ClickHouse server through clickhouse-connect (HTTP interface)."""

    def __init__(self, url: str, username: str = "default", password: str = "") -> None:
        import clickhouse_connect

        try:
            # One HTTP session per client: the monitor's fast path keeps temporary tables in it.
            self._client = clickhouse_connect.get_client(
                dsn=url, username=username, password=password, autogenerate_session_id=True
            )
        except Exception as exc:
            if _unavailable(exc):
                raise ClickHouseUnavailable(f"ClickHouse at {url} unavailable: {exc}") from exc
            raise

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        try:
            self._client.command(sql, parameters=parameters)
        except Exception as exc:
            if _unavailable(exc):
                raise ClickHouseUnavailable(str(exc)) from exc
            raise

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            return [tuple(row) for row in self._client.query(sql, parameters=parameters).result_rows]
        except Exception as exc:
            if _unavailable(exc):
                raise ClickHouseUnavailable(str(exc)) from exc
            raise

    def insert(self, table: str, columns: Columns, rows: Rows, settings: QuerySettings | None = None) -> None:
        if not rows:
            return
        try:
            self._client.insert(
                table, [list(r) for r in rows], column_names=list(columns), settings=dict(settings or {})
            )
        except Exception as exc:
            if _unavailable(exc):
                raise ClickHouseUnavailable(str(exc)) from exc
            raise

    def insert_protobuf(self, table: str, data: bytes, schema: str, message: str) -> None:
        settings = {
            "format_schema_source": "string",
            "format_schema": schema,
            "format_schema_message_name": message,
        }
        try:
            self._client.raw_insert(table, insert_block=data, settings=settings, fmt="Protobuf")
        except Exception as exc:
            if _unavailable(exc):
                raise ClickHouseUnavailable(str(exc)) from exc
            raise

    def close(self) -> None:
        self._client.close()


def open_clickhouse(
    url: str, embedded_path: Path, username: str = "default", password: str = ""
) -> ClickHouse:
    """The server at `url` when one is configured, else the embedded engine at `embedded_path`."""
    if url:
        return ServerClickHouse(url, username=username, password=password)
    return ChdbClickHouse(embedded_path)
