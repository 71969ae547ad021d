"""Entry point: `python -m services.embedder` or `llmops-embedder`."""

from __future__ import annotations

import asyncio

from services.embedder.app import create_app


def main() -> None:
    asyncio.run(create_app().run())


if __name__ == "__main__":
    main()
