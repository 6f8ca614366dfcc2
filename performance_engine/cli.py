"""``perf-engine``: the one command line entry point (SPEC 6).

Every command exits non-zero with a one-line reason on bad input or an unreachable
service; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from performance_engine.errors import PerformanceEngineError
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.types import DIFFICULTIES, PerformanceStatsData
from performance_engine.settings import Settings, load_settings

__all__ = ["main"]

logger = logging.getLogger(__name__)

EXIT_FAILURE = 1
EXIT_USAGE = 2


def _calculator(settings: Settings) -> MetricsCalculator:
    from performance_engine.plugins import build_calculator

    return build_calculator(settings)


def _cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.backfill import backfill_file
    from performance_engine.store import StatsStore

    calculator = _calculator(settings)
    err = Console(stderr=True)
    with StatsStore.from_settings(settings) as store:
        store.ping()
        with Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(),
            TextColumn("{task.completed:>9,}/{task.total:<9,}"),
            TimeElapsedColumn(),
            console=err,
            disable=args.quiet,
            transient=False,
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done, total=total)

            report = backfill_file(
                args.file, store, calculator, skip_invalid=args.skip_invalid, progress=progress
            )
    for error in report.rejected[:10]:
        err.print(f"skipped {error}", markup=False, highlight=False)
    if len(report.rejected) > 10:
        err.print(f"... and {len(report.rejected) - 10} more invalid rows", highlight=False)
    print(report.summary())
    return 0


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from performance_engine.consumer.app import create_app
    from performance_engine.preflight import require_broker, require_redis

    require_redis(settings)
    require_broker(settings)
    app = create_app(settings, _calculator(settings))
    worker = faust.Worker(app, loglevel=args.loglevel, quiet=True)
    worker.execute_from_commandline()  # returns when the worker stops (Ctrl-C, SIGTERM)
    return 0


def _cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.client import PerformanceStats
    from performance_engine.store import StatsStore

    with StatsStore.from_settings(settings) as store:
        stats = PerformanceStats.create_performance_stats(
            user_id=args.user_id,
            sub_topic_id=args.sub_topic_id,
            learning_mode=args.mode,
            store=store,
        )()
    if args.json:
        sys.stdout.write(stats.to_json().decode() + "\n")
    else:
        Console().print(_stats_table(stats))
    return 0


def _stats_table(stats: PerformanceStatsData) -> Table:
    table = Table(
        title=(
            f"user {stats.user_id} · sub-topic {stats.sub_topic_id} · {stats.learning_mode} "
            f"· version {stats.version}"
        )
    )
    table.add_column("difficulty")
    for column in ("attempts", "correct", "score", "avg attempts", "accuracy", "completion"):
        table.add_column(column, justify="right")
    for d in DIFFICULTIES:
        average, accuracy = stats.average_attempts[d], stats.accuracy[d]
        table.add_row(
            d.value,
            str(stats.attempts[d]),
            str(stats.correct_attempts[d]),
            str(stats.difficulty_scores[d]),
            "-" if average is None else f"{average:.2f}",
            "-" if accuracy is None else f"{accuracy:.1%}",
            stats.difficulty_completion[d].value,
        )
    table.caption = (
        f"passed: {', '.join(d.value for d in stats.passed_difficulties) or '-'} · "
        f"failed: {', '.join(d.value for d in stats.failed_difficulties) or '-'} · "
        f"ranking: {' < '.join(d.value for d in stats.difficulty_ranking) or '-'} · "
        f"{stats.first_attempt_at} .. {stats.last_attempt_at}"
    )
    return table


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"{text} is not from 1 to 2**63-1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perf-engine",
        description="Live learner-performance statistics: Kafka in, Redis state, stats out.",
    )
    parser.add_argument("--debug", action="store_true", help="log verbosely, show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    backfill = commands.add_parser(
        "backfill", help="compute state and stats for historical attempts and store them"
    )
    backfill.add_argument("file", type=Path, help="CSV, JSON Lines (.jsonl) or Parquet file")
    backfill.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip bad rows (and count them) instead of stopping",
    )
    backfill.add_argument("--quiet", action="store_true", help="no progress bar")
    backfill.set_defaults(handler=_cmd_backfill)

    worker = commands.add_parser(
        "worker", help="run the streaming worker (attempts in, state in Redis, stats out)"
    )
    worker.add_argument(
        "--loglevel", default="info", choices=["crit", "error", "warn", "info", "debug"]
    )
    worker.set_defaults(handler=_cmd_worker)

    stats = commands.add_parser("stats", help="show the latest stats of a scope from Redis")
    stats.add_argument("user_id", type=_positive_int)
    stats.add_argument("sub_topic_id", type=_positive_int)
    stats.add_argument("--mode", default="standard", help="learning mode (default: standard)")
    stats.add_argument("--json", action="store_true", help="print the SPEC 4 JSON")
    stats.set_defaults(handler=_cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return handler(args, load_settings())
    except PerformanceEngineError as exc:
        if args.debug:
            logger.exception("command failed")
        print(f"perf-engine {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"perf-engine {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"perf-engine {args.command}: unexpected error: {type(exc).__name__}: {exc} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
