"""Entry point of the `llmops` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from llmops.feedback.v1.events_pb2 import Verdict

from services.cli import finetune as finetune_cli
from services.cli.ingest import IngestReport, discover, ingest_files, resolve_api_key
from services.cli.query import CallFailed, ask, send_feedback
from services.cli.stack import Platform
from services.cli.stats import stats
from shared.infra.paths import DEPLOY_DIR, REPO_ROOT, default_state_dir
from shared.infra.process import InfraError
from shared.infra.stack import Stack

SAMPLE_CORPUS = DEPLOY_DIR / "sample-corpus"


def _platform(args: argparse.Namespace) -> Platform:
    return Platform(Stack(Path(args.state_dir), kafka_nodes=args.kafka_nodes))


def cmd_up(args: argparse.Namespace) -> int:
    platform = _platform(args)
    platform.up()
    print(f"llmops is up (logs: {platform.state_dir / 'logs'}). Endpoints:")
    for name, value in platform.endpoints():
        print(f"  {name:22s} {value}")
    if not args.no_sample:
        print(f"ingesting the sample corpus ({SAMPLE_CORPUS.relative_to(REPO_ROOT)}) into tenant 'demo':")
        report = _ingest([SAMPLE_CORPUS], gateway=args.gateway, api_key=platform.ensure_demo_key())
        if report.failed:
            return 1
    print(f"Demo tenant API key: {platform.demo_key_file} (used by `llmops ingest` by default).")
    print("Stop with `llmops down` (or `make stop`).")
    return 0


def _ingest(paths: list[Path], *, gateway: str, api_key: str, concurrency: int = 4) -> IngestReport:
    files = list(discover(paths))
    report = asyncio.run(ingest_files(files, target=gateway, api_key=api_key, concurrency=concurrency))
    print(
        f"{report.indexed} indexed, {report.unchanged} unchanged, {len(report.failed)} failed, "
        f"{report.chunks} chunks"
    )
    for document_id, reason in report.failed:
        print(f"  failed: {document_id}: {reason}", file=sys.stderr)
    return report


def cmd_ingest(args: argparse.Namespace) -> int:
    api_key = resolve_api_key(args.api_key, Path(args.state_dir))
    report = _ingest(
        [Path(p) for p in args.paths], gateway=args.gateway, api_key=api_key, concurrency=args.concurrency
    )
    return 1 if report.failed else 0


def cmd_ask(args: argparse.Namespace) -> int:
    api_key = resolve_api_key(args.api_key, Path(args.state_dir))
    asyncio.run(
        ask(
            args.question,
            target=args.gateway,
            api_key=api_key,
            top_k=args.top_k,
            max_tokens=args.max_tokens,
            template=args.template,
            timeout_s=args.timeout,
        )
    )
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    api_key = resolve_api_key(args.api_key, Path(args.state_dir))
    verdict = (
        Verdict.VERDICT_UP if args.up else Verdict.VERDICT_DOWN if args.down else Verdict.VERDICT_UNSPECIFIED
    )
    event_id = asyncio.run(
        send_feedback(
            args.correlation_id,
            target=args.gateway,
            api_key=api_key,
            verdict=verdict,
            rating=args.rating,
            correction=args.correction,
            comment=args.comment,
        )
    )
    print(f"feedback recorded ({event_id})")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    asyncio.run(stats(target=args.monitor, tenant_id=args.tenant, minutes=args.minutes))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    if args.finetune_command == "trigger":
        parameters = finetune_cli.parse_parameters(args.param)
        asyncio.run(finetune_cli.trigger(target=args.finetune, tenant_id=args.tenant, parameters=parameters))
    elif args.finetune_command == "jobs":
        asyncio.run(
            finetune_cli.jobs(target=args.finetune, tenant_id=args.tenant, limit=args.limit, job_id=args.job)
        )
    else:
        asyncio.run(finetune_cli.datasets(target=args.finetune, tenant_id=args.tenant, limit=args.limit))
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


API_KEY_HELP = "tenant API key (default: $LLMOPS_API_KEY or the demo key)"


def _add_stack_commands(sub: Any) -> None:
    up = sub.add_parser("up", help="start infrastructure and every service, ingest the sample corpus")
    up.add_argument("--no-sample", action="store_true", help="do not ingest deploy/sample-corpus")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop services and infrastructure").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show what is running").set_defaults(func=cmd_status)


def _add_use_commands(sub: Any) -> None:
    ingest = sub.add_parser("ingest", help="ingest files or folders (text, Markdown, HTML, PDF)")
    ingest.add_argument("paths", nargs="+", help="files or folders")
    ingest.add_argument("--api-key", help=API_KEY_HELP)
    ingest.add_argument("--concurrency", type=int, default=4, help="documents in flight")
    ingest.set_defaults(func=cmd_ingest)
    question = sub.add_parser("ask", help="ask a question: the answer streams, then its sources")
    question.add_argument("question", help="the question")
    question.add_argument("--api-key", help=API_KEY_HELP)
    question.add_argument("--top-k", type=int, default=0, help="chunks of context (0: service default)")
    question.add_argument("--max-tokens", type=int, default=0, help="answer length cap (0: template default)")
    question.add_argument("--template", default="", help="prompt template id (default: the tenant's)")
    question.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
    question.set_defaults(func=cmd_ask)
    feedback = sub.add_parser("feedback", help="rate an answer by its request id")
    feedback.add_argument("correlation_id", help="the request id `llmops ask` printed")
    thumbs = feedback.add_mutually_exclusive_group()
    thumbs.add_argument("--up", action="store_true", help="thumbs up")
    thumbs.add_argument("--down", action="store_true", help="thumbs down")
    feedback.add_argument("--rating", type=int, default=0, choices=range(0, 6), help="1-5 (0: none)")
    feedback.add_argument("--correction", default="", help="the answer it should have given")
    feedback.add_argument("--comment", default="")
    feedback.add_argument("--api-key", help=API_KEY_HELP)
    feedback.set_defaults(func=cmd_feedback)


def _add_ops_commands(sub: Any) -> None:
    ops = sub.add_parser("stats", help="traffic, latency, groundedness and feedback from the monitor")
    ops.add_argument("--tenant", default="demo", help="tenant id (default: demo)")
    ops.add_argument("--minutes", type=float, default=60.0, help="window, ending now")
    ops.add_argument("--monitor", default="127.0.0.1:50055", help="monitor gRPC address")
    ops.set_defaults(func=cmd_stats)
    ft = sub.add_parser("finetune", help="fine-tune jobs and curated datasets")
    ft.add_argument("--finetune", default="127.0.0.1:50056", help="finetune gRPC address")
    ft_sub = ft.add_subparsers(dest="finetune_command", required=True)
    ft_trigger = ft_sub.add_parser("trigger", help="curate a dataset now and schedule a job on it")
    ft_trigger.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="training parameter, e.g. epochs=3"
    )
    ft_jobs = ft_sub.add_parser("jobs", help="the tenant's jobs, newest first")
    ft_jobs.add_argument("--job", default="", help="only this job id")
    ft_datasets = ft_sub.add_parser("datasets", help="the tenant's dataset versions")
    for command in (ft_trigger, ft_jobs, ft_datasets):
        command.add_argument("--tenant", default="demo", help="tenant id (default: demo)")
    for command in (ft_jobs, ft_datasets):
        command.add_argument("--limit", type=int, default=20)
    ft.set_defaults(func=cmd_finetune)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmops", description="Run and use the llmops platform locally.")
    parser.add_argument("--state-dir", default=str(default_state_dir()), help="data, logs and pid files")
    parser.add_argument("--kafka-nodes", type=int, default=1, choices=[1, 3])
    parser.add_argument("--gateway", default="127.0.0.1:50051", help="gateway gRPC address")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stack_commands(sub)
    _add_use_commands(sub)
    _add_ops_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (InfraError, CallFailed, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
