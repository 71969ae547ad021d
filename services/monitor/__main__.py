"""Entry point: `python -m services.monitor` or `llmops-monitor`."""

from __future__ import annotations

import asyncio

from services.monitor.app import create_app


def main() -> None:
    asyncio.run(create_app().run())


if __name__ == "__main__":
    main()
