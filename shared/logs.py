"""JSON logs on stderr, one object per line, with the service name on every record."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


class _ServiceFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route all logging (ours, FastStream's, aiokafka's) through one JSON handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_ServiceFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka is chatty at INFO about group rebalances; keep its warnings.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
