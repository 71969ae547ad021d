"""Entry point: `python -m services.retriever` or `llmops-retriever`."""

from __future__ import annotations

import asyncio

from services.retriever.app import create_app


def main() -> None:
    asyncio.run(create_app().run())


if __name__ == "__main__":
    main()
