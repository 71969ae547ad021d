"""Entry point: `python -m services.finetune` or `llmops-finetune`."""

from __future__ import annotations

import asyncio

from services.finetune.app import create_app


def main() -> None:
    asyncio.run(create_app().run())


if __name__ == "__main__":
    main()
