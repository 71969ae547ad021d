"""Entry point of the `llmops` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.cli.stack import Platform
from shared.infra.paths import default_state_dir
from shared.infra.process import InfraError
from shared.infra.stack import Stack


def _platform(args: argparse.Namespace) -> Platform:
    return Platform(Stack(Path(args.state_dir), kafka_nodes=args.kafka_nodes))


def cmd_up(args: argparse.Namespace) -> int:
    platform = _platform(args)
    platform.up()
    print(f"llmops is up (logs: {platform.state_dir / 'logs'}). Endpoints:")
    for name, value in platform.endpoints():
        print(f"  {name:22s} {value}")
    print("Stop with `llmops down` (or `make stop`).")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    _platform(args).down()
    print("llmops is down")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    states = _platform(args).status()
    for name, state in states.items():
        print(f"{name:10s} {state}")
    return 0 if all(s in {"up", "serving"} for s in states.values()) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmops", description="Run and use the llmops platform locally.")
    parser.add_argument("--state-dir", default=str(default_state_dir()), help="data, logs and pid files")
    parser.add_argument("--kafka-nodes", type=int, default=1, choices=[1, 3])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start infrastructure and every service").set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop services and infrastructure").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show what is running").set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
