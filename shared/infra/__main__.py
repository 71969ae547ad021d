"""`python -m shared.infra up|down|status`: the local infrastructure that `make run` and tests use."""

from __future__ import annotations

import argparse
import sys

from shared.infra.paths import default_state_dir
from shared.infra.process import InfraError
from shared.infra.stack import COMPONENTS, Stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.infra", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status", "env"])
    parser.add_argument(
        "--components",
        default=",".join(COMPONENTS),
        help="comma-separated subset of: " + ", ".join(COMPONENTS),
    )
    parser.add_argument("--kafka-nodes", type=int, default=1, choices=[1, 3])
    parser.add_argument("--state-dir", default=str(default_state_dir()))
    parser.add_argument("--port-base", type=int, default=19000)
    args = parser.parse_args(argv)
    from pathlib import Path

    stack = Stack(
        Path(args.state_dir),
        kafka_nodes=args.kafka_nodes,
        port_base=args.port_base,
        components=tuple(c for c in args.components.split(",") if c),
    )
    try:
        if args.action == "up":
            stack.up()
            print(f"infrastructure up (logs in {stack.state_dir / 'logs'}):")
            for key, value in stack.endpoints().items():
                print(f"  {key}={value}")
        elif args.action == "down":
            stack.down()
            print("infrastructure down")
        elif args.action == "env":
            for key, value in stack.endpoints().items():
                print(f"export {key}={value}")
        else:
            for name, state in stack.status().items():
                print(f"{name:10s} {state}")
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
