"""``perf-engine``: the one command line entry point (SPEC 6).

Every command exits non-zero with a one-line reason on bad input or an unreachable
service; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from performance_engine.erasure import Erasure
from performance_engine.errors import ConfigurationError, PerformanceEngineError
from performance_engine.metrics.calculator import MetricsCalculator
from performance_engine.metrics.types import DIFFICULTIES, PerformanceStatsData
from performance_engine.settings import Settings, is_loopback, load_settings
from performance_engine.store.failures import redact_url
from performance_engine.tokens import SCOPES as TOKEN_SCOPES
from performance_engine.tools.learning_cli import add_commands as add_learning_commands
from performance_engine.tools.learning_cli import add_history_source, erased_for

if TYPE_CHECKING:
    from performance_engine.store.stats_store import StatsStore
    from performance_engine.tools.backfill import BackfillReport

__all__ = ["backfill_progress", "main", "print_report"]

logger = logging.getLogger(__name__)

EXIT_FAILURE = 1


def _calculator(settings: Settings) -> MetricsCalculator:
    from performance_engine.plugins import build_calculator

    return build_calculator(settings)


def _cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.store.stats_store import StatsStore

    calculator = _calculator(settings)
    with StatsStore.from_settings(settings) as store, backfill_progress(args.quiet) as progress:
        store.ping()
        report = _backfill(
            args, store, calculator, progress, erased_for(args, settings), args.include_erased
        )
    print_report(report, print)
    return 0


@contextmanager
def backfill_progress(quiet: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """The backfill's progress bar on stderr, one line per phase (reading, reading state,
    writing); yields the callback the backfill reports to."""
    with Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.completed:>9,}/{task.total:<9,}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet,
        transient=False,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield progress


def print_report(report: BackfillReport, write: Callable[[str], Any]) -> None:
    """The first ten skipped rows on stderr, then the summary line through ``write``."""
    err = Console(stderr=True)
    for error in report.rejected[:10]:
        err.print(f"skipped {error}", markup=False, highlight=False)
    if len(report.rejected) > 10:
        err.print(f"... and {len(report.rejected) - 10} more invalid rows", highlight=False)
    write(report.summary())


def _backfill(
    args: argparse.Namespace,
    store: StatsStore,
    calculator: MetricsCalculator,
    progress: Callable[[str, int, int], None],
    erasures: Mapping[int, Erasure],
    include_erased: bool,
) -> BackfillReport:
    from performance_engine.tools.backfill import backfill_file, backfill_sql

    source: str = args.source
    from_database = "://" in source
    if args.query is None and args.table is None:
        if from_database:
            raise ConfigurationError(
                f"{_redacted_url(source)} is a database: say what to read with --query "
                "'SELECT ...' or --table NAME"
            )
        return backfill_file(
            Path(source),
            store,
            calculator,
            skip_invalid=args.skip_invalid,
            progress=progress,
            erasures=erasures,
            include_erased=include_erased,
        )
    if not from_database:
        raise ConfigurationError(
            "--query and --table read from a database: give its SQLAlchemy URL "
            f"(e.g. postgresql+psycopg://user@host/db), not {source!r}"
        )
    from performance_engine.platform.outbox import outbox_engine

    engine = outbox_engine(source)
    try:
        return backfill_sql(
            engine,
            store,
            calculator,
            query=args.query,
            table=args.table,
            skip_invalid=args.skip_invalid,
            progress=progress,
            erasures=erasures,
            include_erased=include_erased,
        )
    finally:
        engine.dispose()


def _redacted_url(url: str) -> str:
    from performance_engine.platform.outbox import redacted_url

    return redacted_url(url)


def _database_url(args: argparse.Namespace, settings: Settings) -> str:
    url = getattr(args, "database_url", None) or settings.outbox_url
    if not url:
        raise ConfigurationError(
            "no database: give its URL (an SQLAlchemy URL, e.g. "
            "postgresql+psycopg://user@host/db) or set PERF_ENGINE_OUTBOX_URL"
        )
    return str(url)


def _cmd_outbox_init(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.platform.outbox import (
        LANES_TABLE,
        OUTBOX_TABLE,
        create_outbox,
        outbox_engine,
    )

    engine = outbox_engine(_database_url(args, settings))
    where = engine.url.render_as_string(hide_password=True)
    try:
        created = create_outbox(engine)
    finally:
        engine.dispose()
    if created:
        print(f"created tables {OUTBOX_TABLE} and {LANES_TABLE} in {where}")
    else:
        print(f"{OUTBOX_TABLE} already exists in {where}; nothing changed")
    return 0


def _cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.tools.relay import RelayOptions, relay_engine, serve

    if not args.debug:
        logging.getLogger("performance_engine").setLevel(logging.INFO)
    options = RelayOptions(
        batch_size=args.batch_size, poll_seconds=args.poll, retention_seconds=args.retention
    )
    engine = relay_engine(_database_url(args, settings))
    serve(engine, settings, options, metrics_port=args.metrics_port, drain=args.drain)
    return 0


def _with_flags(args: argparse.Namespace, settings: Settings) -> Settings:
    if getattr(args, "allow_eviction", False):
        settings = dataclasses.replace(settings, allow_eviction=True)
    if getattr(args, "accept_state_gap", False):
        settings = dataclasses.replace(settings, accept_state_gap=True)
    if getattr(args, "insecure_open_http", False):
        settings = dataclasses.replace(settings, insecure_open_http=True)
    return settings


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from performance_engine.broker import require_broker
    from performance_engine.store.checks import require_redis, require_safe_redis
    from performance_engine.worker.app import create_app

    settings = _with_flags(args, settings)
    require_redis(settings)
    require_safe_redis(settings)
    require_broker(settings)
    app = create_app(settings, _calculator(settings))
    worker = faust.Worker(app, loglevel=args.loglevel, quiet=True)
    worker.execute_from_commandline()  # returns when the worker stops (Ctrl-C, SIGTERM)
    return 0


def _read_input(args: argparse.Namespace, settings: Settings) -> Any:
    """Attempts from a file or stdin, validated (the loaders of the backfill)."""
    from performance_engine.metrics.frame import frame_attempts
    from performance_engine.tools.history_files import load_attempts

    modes = _calculator(settings).learning_modes
    if str(args.file) != "-":
        loaded = load_attempts(args.file, modes, skip_invalid=args.skip_invalid)
        return frame_attempts(loaded.frame), loaded.errors
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"stdin.{args.format}"
        path.write_bytes(sys.stdin.buffer.read())
        loaded = load_attempts(path, modes, skip_invalid=args.skip_invalid)
        return frame_attempts(loaded.frame), loaded.errors


def _cmd_emit(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.platform.producer import AttemptProducer

    attempts, errors = _read_input(args, settings)  # every row validated before any is sent
    err = Console(stderr=True)
    for error in errors[:10]:
        err.print(f"skipped {error}", markup=False, highlight=False)
    with AttemptProducer(settings) as producer:
        sent = producer.emit_many(attempts)
    skipped = f"; {len(errors)} invalid rows skipped" if errors else ""
    print(f"emitted {sent} attempts to {settings.attempts_topic}{skipped}")
    return 0


def _cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.platform.producer import AttemptProducer
    from performance_engine.tools.simulator import LearnerModel, simulate

    model = LearnerModel(users=args.users, sub_topics=args.sub_topics, seed=args.seed)
    with AttemptProducer(settings) as producer:
        report = simulate(
            producer,
            model,
            rate=args.rate,
            duration=args.duration,
            count=args.count,
            invalid_share=args.invalid,
        )
    print(report)
    return 0


def _cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.platform.subscriber import StatsSubscriber

    shown = 0
    with StatsSubscriber(
        settings,
        group_id=args.group,
        start="earliest" if args.from_beginning else "latest",
    ) as subscriber:
        for event in subscriber.events(timeout=args.timeout):
            if args.json:
                sys.stdout.write(msgspec.json.encode(event).decode() + "\n")
            else:
                sys.stdout.write(_update_line(event.stats) + "\n")
            sys.stdout.flush()
            shown += 1
            if args.count and shown >= args.count:
                break
    return 0


def _update_line(stats: PerformanceStatsData) -> str:
    scores = " ".join(f"{d.value[0]}{stats.difficulty_scores[d]}" for d in DIFFICULTIES)
    passed = ",".join(d.value for d in stats.passed_difficulties) or "-"
    learning = stats.learning
    mastery = (
        "mastery unknown"
        if learning is None
        else f"mastery {learning.mastery_probability:.0%}"
        + (" (mastered)" if learning.mastered else "")
        + f", next {learning.recommended_difficulty.value}"
    )
    return (
        f"user {stats.user_id} sub-topic {stats.sub_topic_id} {stats.learning_mode} "
        f"v{stats.version}: attempts {stats.total_attempts}, correct "
        f"{stats.total_correct_attempts}, scores {scores}, passed {passed}, {mastery}"
    )


def _cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.broker import require_broker
    from performance_engine.store.checks import eviction_policy, require_redis
    from performance_engine.topics import topic_names

    settings = _with_flags(args, settings)
    failed = False

    def report(ok: bool | None, what: str, detail: str) -> None:
        nonlocal failed
        failed = failed or ok is False
        mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
        print(f"{mark}  {what:<8} {detail}")

    try:
        require_broker(settings)
        report(True, "kafka", f"{settings.kafka_bootstrap} answers")
        known = topic_names(settings)
        wanted = [
            settings.attempts_topic,
            settings.stats_topic,
            settings.dlq_topic,
            settings.erasures_topic,
            *([settings.xapi_topic] if settings.xapi_topic else []),
        ]
        missing = [t for t in wanted if t not in known]
        report(
            not missing,
            "topics",
            f"missing: {', '.join(missing)} (the worker creates them at start)"
            if missing
            else f"{', '.join(wanted)} exist",
        )
    except PerformanceEngineError as exc:
        report(False, "kafka", str(exc))
    try:
        require_redis(settings)
        report(True, "redis", f"{redact_url(settings.redis_url)} answers")
        policy = eviction_policy(settings)
        if policy is None:
            report(None, "memory", "maxmemory-policy unknown (this user may not run INFO)")
        elif policy == "noeviction":
            report(True, "memory", "maxmemory-policy is noeviction: state is safe")
        else:
            report(
                None if settings.allow_eviction else False,
                "memory",
                f"maxmemory-policy is {policy}: Redis may evict state; set noeviction",
            )
        report(*_erasures_line(settings))
    except PerformanceEngineError as exc:
        report(False, "redis", str(exc))
    if settings.xapi_mapping_path is not None:
        from performance_engine.xapi import load_mapping

        try:
            mapping = load_mapping(settings.xapi_mapping_path)
            report(
                True,
                "xapi",
                f"{settings.xapi_mapping_path}: verbs {', '.join(mapping.verbs)}; sub-topic "
                f"from {mapping.sub_topic_from}",
            )
        except PerformanceEngineError as exc:
            report(False, "xapi", str(exc))
    if settings.web_tokens_file is not None:
        try:
            from performance_engine.tokens import read_tokens

            count = len(read_tokens(settings.web_tokens_file))
            report(
                True,
                "web",
                f"{count} tokens in {settings.web_tokens_file}; every request needs one",
            )
        except PerformanceEngineError as exc:
            report(False, "web", str(exc))
    elif is_loopback(settings.web_host):
        report(True, "web", f"the worker listens on {settings.web_host} only")
    else:
        report(
            None,
            "web",
            f"the worker listens on {settings.web_host}:{settings.web_port} with no "
            "authentication: anyone who reaches it reads every learner's stats and the "
            "dashboard (set PERF_ENGINE_WEB_TOKENS_FILE, or PERF_ENGINE_WEB_HOST=127.0.0.1)",
        )
    if not failed:
        from performance_engine.tools.state_check import describe, judge_state

        try:
            ok, line = describe(judge_state(settings))
            report(ok, "state", line)
        except PerformanceEngineError as exc:
            report(False, "state", str(exc))
    return EXIT_FAILURE if failed else 0


def _erasures_line(settings: Settings) -> tuple[bool | None, str, str]:
    """How many learners are erased, and whether an erasure was left half-way."""
    from performance_engine.store.erasure import stored_erasures
    from performance_engine.store.stats_store import StatsStore

    with StatsStore.from_settings(settings) as store:
        found = stored_erasures(store)
    under_way = sorted(user for user, erasure in found.items() if not erasure.complete)
    if under_way:
        shown = ", ".join(map(str, under_way[:5])) + (" ..." if len(under_way) > 5 else "")
        return (
            None,
            "erasure",
            f"{len(under_way)} erasures left half-way (users {shown}): their attempts are "
            "held back until `perf-engine erase --user ID` is run again",
        )
    return True, "erasure", f"{len(found)} learners erased, none half-way"


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.tools.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            duration=args.duration,
            users=args.users,
            rate=args.rate,
            seed=args.seed,
            summary=args.summary,
            open_browser=args.open,
            warmup_learners=0 if args.no_fit else 300,
        )
    )


def _cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.platform.read_api import PerformanceStats
    from performance_engine.store.stats_store import StatsStore

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
    learning = stats.learning
    columns = ["attempts", "correct", "score", "avg attempts", "accuracy", "completion"]
    if learning is not None:
        columns += ["predicted", "first try"]
    for column in columns:
        table.add_column(column, justify="right")
    for d in DIFFICULTIES:
        average, accuracy = stats.average_attempts[d], stats.accuracy[d]
        cells = [
            d.value,
            str(stats.attempts[d]),
            str(stats.correct_attempts[d]),
            str(stats.difficulty_scores[d]),
            "-" if average is None else f"{average:.2f}",
            "-" if accuracy is None else f"{accuracy:.1%}",
            stats.difficulty_completion[d].value,
        ]
        if learning is not None:
            first = learning.first_attempt_accuracy[d]
            cells += [
                f"{learning.predicted_correct[d]:.1%}",
                "-" if first is None else f"{first:.1%}",
            ]
        table.add_row(*cells)
    lines = [
        f"passed: {', '.join(d.value for d in stats.passed_difficulties) or '-'} · "
        f"failed: {', '.join(d.value for d in stats.failed_difficulties) or '-'} · "
        f"ranking: {' < '.join(d.value for d in stats.difficulty_ranking) or '-'} · "
        f"{stats.first_attempt_at} .. {stats.last_attempt_at}",
        _learning_line(stats),
    ]
    table.caption = "\n".join(lines)
    return table


def _learning_line(stats: PerformanceStatsData) -> str:
    learning = stats.learning
    if learning is None:
        return (
            "learning: unknown, this scope's state predates its attempt history; "
            "backfill the platform's history to rebuild it"
        )
    return (
        f"mastery {learning.mastery_probability:.1%} "
        f"({'mastered' if learning.mastered else 'not mastered'}) · "
        f"next: {learning.recommended_difficulty.value} · "
        f"recent accuracy {learning.recent_accuracy:.1%} · "
        f"streak {learning.current_streak} (longest {learning.longest_streak})"
    )


def _cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.tokens import add_token, read_tokens, revoke_token

    path = args.file or settings.web_tokens_file
    if path is None:
        raise ConfigurationError("say which file: --file PATH or PERF_ENGINE_WEB_TOKENS_FILE")
    if args.token_command == "add":
        made = add_token(path, args.name, [s.strip() for s in args.scopes.split(",")])
        print(made)
        print(f"token {args.name!r} added to {path}: this is the only time it is shown",
              file=sys.stderr)  # fmt: skip
    elif args.token_command == "revoke":
        if not revoke_token(path, args.name):
            raise ConfigurationError(f"no token named {args.name!r} in {path}")
        print(f"token {args.name!r} revoked; workers stop taking it at their next request")
    else:
        for found in read_tokens(path) if path.exists() else []:
            print(f"{found.name}  {','.join(sorted(found.scopes))}")
    return 0


def _cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.platform.erase import erase_learner

    report = erase_learner(
        args.user,
        args.reason,
        settings=settings,
        outbox_url=args.outbox_url,
        erased_by=args.by,
    )
    print(report.summary())
    return 0


def _cmd_upgrade_store(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.store.stats_store import StatsStore
    from performance_engine.store.upgrade import upgrade_layout

    with StatsStore.from_settings(settings) as store:
        report = upgrade_layout(store)
    print(
        f"{report.scanned:,} scopes scanned; {report.moved:,} moved to the stats hashes"
        + (f"; {report.changed:,} changed meanwhile (run it again)" if report.changed else "")
    )
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"{text} is not from 1 to 2**63-1")
    return value


#: What ``performance-engine[worker]`` adds to the plain (platform) install.
WORKER_MODULES = frozenset({"faust", "mode", "pandas", "pyarrow", "numpy", "numba"})


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
    add_history_source(backfill, "SOURCE")
    backfill.set_defaults(handler=_cmd_backfill)
    add_learning_commands(commands)

    demo = commands.add_parser(
        "demo", help="the embedded demo: broker, Redis, worker and a simulated platform, live"
    )
    demo.add_argument("--duration", type=float, default=None, help="seconds (default: Ctrl-C)")
    demo.add_argument("--users", type=_positive_int, default=20)
    demo.add_argument("--rate", type=float, default=50.0, help="attempts per second")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--summary", type=Path, default=None, help="write a JSON summary here at the end"
    )
    demo.add_argument("--open", action="store_true", help="open the dashboard in a browser")
    demo.add_argument(
        "--no-fit",
        action="store_true",
        help="keep the default learning parameters (no warm-up fit)",
    )
    demo.set_defaults(handler=_cmd_demo)

    worker = commands.add_parser(
        "worker", help="run the streaming worker (attempts in, state in Redis, stats out)"
    )
    worker.add_argument(
        "--loglevel", default="info", choices=["crit", "error", "warn", "info", "debug"]
    )
    worker.set_defaults(handler=_cmd_worker)

    worker.add_argument(
        "--allow-eviction",
        action="store_true",
        help="start even if Redis's maxmemory-policy may evict state",
    )
    worker.add_argument(
        "--insecure-open-http",
        action="store_true",
        help="serve HTTP beyond loopback without tokens (only behind a proxy that authenticates)",
    )
    worker.add_argument(
        "--accept-state-gap",
        action="store_true",
        help="go on although Redis lost state the attempts topic no longer holds (after "
        "backfilling the platform's history)",
    )

    emit = commands.add_parser("emit", help="publish attempts from a JSON Lines or CSV file")
    emit.add_argument("file", type=Path, help="a .jsonl/.csv/.parquet file, or - for stdin")
    emit.add_argument(
        "--format",
        choices=["jsonl", "csv"],
        default="jsonl",
        help="the format of stdin (default: jsonl)",
    )
    emit.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip bad rows (and count them) instead of sending nothing",
    )
    emit.set_defaults(handler=_cmd_emit)

    simulate = commands.add_parser("simulate", help="publish synthetic attempts")
    simulate.add_argument("--users", type=_positive_int, default=50)
    simulate.add_argument("--sub-topics", type=_positive_int, default=3)
    simulate.add_argument("--rate", type=float, default=100.0, help="attempts per second")
    simulate.add_argument(
        "--duration", type=float, default=None, help="seconds (default: until Ctrl-C)"
    )
    simulate.add_argument("--count", type=int, default=None, help="stop after this many")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument(
        "--invalid",
        type=float,
        default=0.0,
        help="share of malformed records, to exercise the dead-letter topic",
    )
    simulate.set_defaults(handler=_cmd_simulate)

    watch = commands.add_parser("watch", help="follow stats-updated and print each update")
    watch.add_argument("--from-beginning", action="store_true")
    watch.add_argument("--group", default=None, help="consumer group (default: none)")
    watch.add_argument("--json", action="store_true", help="print each event as JSON")
    watch.add_argument("--count", type=int, default=None, help="stop after this many updates")
    watch.add_argument(
        "--timeout", type=float, default=None, help="stop after this many seconds without an update"
    )
    watch.set_defaults(handler=_cmd_watch)

    outbox = commands.add_parser("outbox", help="the platform's transactional outbox")
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True)
    init = outbox_commands.add_parser(
        "init", help="create the outbox tables in a database (does nothing if they exist)"
    )
    init.add_argument("database_url", nargs="?", help="SQLAlchemy URL (or PERF_ENGINE_OUTBOX_URL)")
    init.set_defaults(handler=_cmd_outbox_init)

    relay = commands.add_parser("relay", help="publish the outbox's committed rows to Kafka")
    relay.add_argument("--database-url", help="SQLAlchemy URL (or PERF_ENGINE_OUTBOX_URL)")
    relay.add_argument("--batch-size", type=_positive_int, default=1000)
    relay.add_argument("--poll", type=float, default=0.2, help="seconds between empty rounds")
    relay.add_argument(
        "--retention", type=float, default=86_400.0, help="seconds sent rows are kept"
    )
    relay.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics")
    relay.add_argument(
        "--drain", action="store_true", help="stop once nothing is pending (for cron and scripts)"
    )
    relay.set_defaults(handler=_cmd_relay)

    check = commands.add_parser(
        "check", help="are Kafka and Redis reachable, the topics there, Redis safe for state?"
    )
    check.add_argument(
        "--allow-eviction",
        action="store_true",
        help="an evicting maxmemory-policy is a warning, not a failure",
    )
    check.set_defaults(handler=_cmd_check)

    token = commands.add_parser("token", help="the HTTP tokens (PERF_ENGINE_WEB_TOKENS_FILE)")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    add = token_commands.add_parser("add", help="make a token, print it once, store its hash")
    add.add_argument("name")
    add.add_argument(
        "--scopes", required=True, help=f"comma-separated, of: {', '.join(TOKEN_SCOPES)}"
    )
    revoke = token_commands.add_parser("revoke", help="remove a token (workers follow)")
    revoke.add_argument("name")
    token_commands.add_parser("list", help="the tokens' names and scopes")
    for sub in (add, revoke, token_commands.choices["list"]):
        sub.add_argument("--file", type=Path, help="default: PERF_ENGINE_WEB_TOKENS_FILE")
        sub.set_defaults(handler=_cmd_token)

    erase = commands.add_parser(
        "erase",
        help="erase a learner everywhere, for good (run it again if it was interrupted)",
    )
    erase.add_argument("--user", type=_positive_int, required=True, metavar="USER_ID")
    erase.add_argument("--reason", default="", help="recorded with the erasure")
    erase.add_argument(
        "--outbox-url",
        help="the platform's outbox database, whose rows of the learner are deleted "
        "(default: PERF_ENGINE_OUTBOX_URL; without either the outbox is not touched)",
    )
    erase.add_argument("--by", default="cli", help="who asked, recorded (default: cli)")
    erase.set_defaults(handler=_cmd_erase)

    upgrade = commands.add_parser(
        "upgrade-store",
        help="move stats stored by an earlier release into the stats hashes (layout 2)",
    )
    upgrade.set_defaults(handler=_cmd_upgrade_store)

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
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in WORKER_MODULES:
            raise
        print(
            f"perf-engine {args.command}: error: this command needs the engine's own "
            f"dependencies ({exc.name} is not installed): "
            "pip install 'performance-engine[worker]'",
            file=sys.stderr,
        )
        return EXIT_FAILURE
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
