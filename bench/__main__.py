"""`python -m bench`: start a private single-node Kafka, run the benchmarks, print and save the table."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.bus import run_bus
from bench.e2e import run_e2e
from bench.embedding import run_embedding
from bench.generation import run_generation
from bench.idle_hop import run_idle_hop
from bench.ingest import run_ingest
from bench.monitor import run_monitor
from bench.report import RESULTS_DIR, Row, environment, markdown_table, status, write_results
from bench.retrieval import run_with_raw, to_rows
from shared.infra.kafka import KAFKA_VERSION
from shared.infra.stack import Stack

# Ports from 33000 (Kafka broker 33092, controller 33093): other stacks on this machine use
# 19000, 29000 and 31000.
PORT_BASE = 33000
BENCHMARKS = ("bus", "embedding", "ingest", "retrieval", "generation", "e2e", "monitor")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        choices=BENCHMARKS,
        action="append",
        help="run only this benchmark (repeatable); default: all",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=20_000,
        help="events per timed run in the auto-commit mode (default 20000)",
    )
    parser.add_argument(
        "--batch-events",
        type=int,
        default=None,
        help="events per timed run in the batch-commit mode (default: --events)",
    )
    parser.add_argument(
        "--commit-events",
        type=int,
        default=None,
        help="events per timed run in the per-message-commit mode (default: --events / 10); every "
        "synchronous commit waits ~5 ms on Kafka 4's group coordinator, so this mode is slow",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="timed runs per variant, alternating A, B, A, B (default 2); the median counts",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2_000,
        help="untimed events each variant processes first, to warm the broker's JVM (default 2000)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time a bare KafkaBroker (apply_types=False, no middlewares, no EventGuard) in the "
        "batch-commit and auto-commit modes",
    )
    parser.add_argument("--embedding-texts", type=int, default=1000, help="texts per embedding run")
    parser.add_argument("--ingest-docs", type=int, default=600, help="documents per ingestion run")
    parser.add_argument("--vectors", type=int, default=50_000, help="vectors in the retrieval benchmark")
    parser.add_argument("--monitor-events", type=int, default=100_000, help="events per monitor sink run")
    parser.add_argument("--queries", type=int, default=200, help="gRPC queries in the end-to-end benchmark")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help=f"where latest.md and latest.json go (default {RESULTS_DIR})",
    )
    args = parser.parse_args(argv)
    if args.commit_events is None:
        args.commit_events = max(1, args.events // 10)
    if args.batch_events is None:
        args.batch_events = args.events
    if min(args.events, args.commit_events, args.batch_events, args.repeats) < 1 or args.warmup < 0:
        parser.error("--events, --commit-events, --batch-events and --repeats must be >= 1, --warmup >= 0")
    return args


def _bus(args: argparse.Namespace, raw: dict[str, Any], started: float) -> list[Row]:
    """The bus benchmark on a private single-node Kafka."""
    with tempfile.TemporaryDirectory(prefix="llmops-bench-") as state_dir:
        stack = Stack(state_dir=Path(state_dir), port_base=PORT_BASE, components=("kafka",))
        kafka = stack.kafka
        status(f"starting Kafka {KAFKA_VERSION} (single node) on {kafka.bootstrap_servers}")
        try:
            kafka.start(create_topics=False)
            status(f"Kafka ready after {time.perf_counter() - started:.1f}s")
            bus_rows, raw["bus"] = asyncio.run(
                run_bus(
                    kafka.bootstrap_servers,
                    events=args.events,
                    commit_events=args.commit_events,
                    batch_events=args.batch_events,
                    repeats=args.repeats,
                    warmup=args.warmup,
                    breakdown=args.breakdown,
                )
            )
            idle_rows, raw["bus_idle_hop"] = asyncio.run(run_idle_hop(kafka.bootstrap_servers))
            bus_rows += idle_rows
        finally:
            status("stopping Kafka")
            kafka.stop()
    return bus_rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Client warnings (e.g. aiokafka retrying while a new topic elects its leader) go to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="[bench] %(name)s: %(message)s")
    selected = args.only or list(BENCHMARKS)
    started = time.perf_counter()
    rows: list[Row] = []
    raw: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    if "bus" in selected:
        rows += _bus(args, raw, started)
    # The others start what they need themselves, one at a time, so they do not compete for the cores.
    if "embedding" in selected:
        embedding_rows, raw["embedding"] = run_embedding(texts=args.embedding_texts)
        rows += embedding_rows
    if "ingest" in selected:
        ingest_rows, raw["ingest"] = run_ingest(docs=args.ingest_docs)
        rows += ingest_rows
    if "retrieval" in selected:
        retrieval_rows, raw["retrieval"] = run_with_raw(vectors=args.vectors)
        rows += to_rows(retrieval_rows)
    if "generation" in selected:
        generation_rows, raw["generation"] = run_generation()
        rows += generation_rows
    if "e2e" in selected:
        e2e_rows, raw["e2e"] = run_e2e(queries=args.queries)
        rows += e2e_rows
    if "monitor" in selected:
        monitor_rows, raw["monitor"] = run_monitor(events=args.monitor_events)
        rows += monitor_rows
    elapsed = time.perf_counter() - started
    raw["wall_s"] = round(elapsed, 1)
    env = environment()
    preamble = (
        f"`python -m bench` on {time.strftime('%Y-%m-%d')}: {env['cpus']} CPUs, Python {env['python']}, "
        f"FastStream {env['faststream']}, aiokafka {env['aiokafka']}, Kafka {KAFKA_VERSION} single node "
        f"on loopback, run took {elapsed:.0f}s. ratio = variant A / variant B; CPU/event is this "
        "process's CPU time (all threads) per event."
    )
    md_path, json_path = write_results(rows, raw, results_dir=args.results_dir, preamble=preamble)
    print(markdown_table(rows))
    status(f"done in {elapsed:.0f}s; wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
