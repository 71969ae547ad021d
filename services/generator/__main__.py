"""Entry point: `python -m services.generator` or `llmops-generator`."""

from __future__ import annotations

import asyncio

from services.generator.app import create_app


def main() -> None:
    asyncio.run(create_app().run())


if __name__ == "__main__":
    main()
