"""Entry point: `python -m services.gateway` or `llmops-gateway`."""

from __future__ import annotations

import asyncio

from services.gateway.app import create_app


def main() -> None:
    asyncio.run(create_app().run())


if __name__ == "__main__":
    main()
