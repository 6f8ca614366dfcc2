"""The ``fit`` and ``evaluate`` commands of ``perf-engine`` (see :mod:`.learning`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from performance_engine.errors import ConfigurationError, InputFileError
from performance_engine.metrics.modes import LearningModes
from performance_engine.metrics.params import ParameterSet
from performance_engine.settings import Settings, load_learning_modes, load_parameter_file

if TYPE_CHECKING:  # pandas, pyarrow and numba load with the commands, not with the parser
    from performance_engine.metrics.frame import LoadResult

#: The fit's default upper bound of guess and of slip (``metrics.fitting.Bounds``).
MAX_GUESS_OR_SLIP = 0.45

__all__ = ["add_commands", "add_history_source"]


def add_commands(commands: Any) -> None:
    """Add ``fit`` and ``evaluate`` to the ``perf-engine`` parser's subcommands."""
    fit = commands.add_parser(
        "fit", help="fit the learning parameters to the platform's history (SPEC 3.2)"
    )
    _history_arguments(fit)
    fit.add_argument("--out", required=True, type=Path, help="the parameter file to write")
    fit.add_argument("--forget", action="store_true", help="fit forget (F) too (else 0)")
    fit.add_argument(
        "--per-question",
        action="store_true",
        help="learn each question's difficulty class and offset from the answers",
    )
    fit.add_argument("--min-learners", type=int, default=50, metavar="N")
    fit.add_argument("--min-attempts", type=int, default=500, metavar="N")
    fit.add_argument("--max-guess", type=float, default=MAX_GUESS_OR_SLIP, metavar="P")
    fit.add_argument("--max-slip", type=float, default=MAX_GUESS_OR_SLIP, metavar="P")
    fit.set_defaults(handler=_cmd_fit)

    evaluate = commands.add_parser(
        "evaluate", help="score next-answer predictions on history (SPEC 3.3)"
    )
    _history_arguments(evaluate)
    evaluate.add_argument("--params", type=Path, help="a parameter file (else the modes')")
    evaluate.add_argument(
        "--predictions", type=Path, metavar="OUT.csv", help="write attempt_id,p per attempt"
    )
    evaluate.add_argument(
        "--report", type=Path, metavar="DIR", help="write a calibration chart (PNG and HTML)"
    )
    evaluate.add_argument("--json", action="store_true", help="print the scores as JSON")
    evaluate.set_defaults(handler=_cmd_evaluate)

    params = commands.add_parser(
        "params", help="the learning parameters published to Redis for every worker"
    )
    params_commands = params.add_subparsers(dest="params_command", required=True)
    publish = params_commands.add_parser(
        "publish", help="publish a parameter file: running workers use it from their next batch"
    )
    publish.add_argument("file", type=Path, metavar="PARAMS", help="a file from perf-engine fit")
    publish.set_defaults(handler=_cmd_params_publish)
    show = params_commands.add_parser("show", help="which parameters are in force")
    show.set_defaults(handler=_cmd_params_show)
    withdraw = params_commands.add_parser(
        "withdraw", help="remove the published set (the file's or the modes' apply again)"
    )
    withdraw.set_defaults(handler=_cmd_params_withdraw)

    refold = commands.add_parser(
        "refold", help="recompute stored scopes now with the parameters in force, and publish"
    )
    refold.add_argument("--sub-topic", type=int, metavar="ID", help="only this sub-topic")
    refold.add_argument("--mode", help="only this learning mode")
    refold.add_argument("--quiet", action="store_true", help="no progress line")
    refold.set_defaults(handler=_cmd_refold)


def add_history_source(parser: argparse.ArgumentParser, metavar: str = "HISTORY") -> None:
    """Where history is read from, as every command that reads it takes it: a file or a
    database URL with ``--query`` or ``--table``; ``--skip-invalid``; ``--quiet``."""
    parser.add_argument(
        "source",
        metavar=metavar,
        help="a CSV, JSON Lines (.jsonl) or Parquet file, or a database's SQLAlchemy URL",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--query", help="from a database: the SQL that selects the attempts")
    what.add_argument("--table", help="from a database: a table with the attempts' columns")
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip bad rows (and count them) instead of stopping",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--include-erased",
        action="store_true",
        help="keep the attempts of erased learners (by default those that occurred up to "
        "their erasure are skipped; the erasures come from the erasures topic and Redis)",
    )


def erased_for(args: argparse.Namespace, settings: Settings) -> dict[int, Any]:
    """The erased learners, whose history a command skips unless --include-erased (then
    only a backfill asks, to write their scopes past their markers)."""
    from performance_engine.platform.erase import erased_learners

    return erased_learners(settings, required=not args.include_erased)


def _history_arguments(parser: argparse.ArgumentParser) -> None:
    add_history_source(parser)
    parser.add_argument(
        "--split",
        type=float,
        metavar="F",
        help="learners whose user_id hashes below F form the test part (0 < F < 1)",
    )
    parser.add_argument("--part", choices=["train", "test"], default=None)


def _read(args: argparse.Namespace, modes: LearningModes) -> LoadResult:
    source: str = args.source
    if "://" not in source:
        if args.query is not None or args.table is not None:
            raise ConfigurationError("--query and --table read from a database URL, not a file")
        from performance_engine.tools.history_files import load_attempts

        return load_attempts(Path(source), modes, skip_invalid=args.skip_invalid)
    if args.query is None and args.table is None:
        raise ConfigurationError("a database: say what to read with --query or --table")
    from performance_engine.platform.outbox import outbox_engine
    from performance_engine.tools.sql_history import load_sql_attempts

    engine = outbox_engine(source)
    try:
        return load_sql_attempts(
            engine, modes, query=args.query, table=args.table, skip_invalid=args.skip_invalid
        )
    finally:
        engine.dispose()


def _history(
    args: argparse.Namespace, settings: Settings, modes: LearningModes, default_part: str
) -> Any:
    from performance_engine.tools.history_files import without_erased
    from performance_engine.tools.learning import history_of

    if args.split is not None and not 0 < args.split < 1:
        raise ConfigurationError(f"--split must lie strictly between 0 and 1, got {args.split}")
    if args.part is not None and args.split is None:
        raise ConfigurationError("--part needs --split F (the share of learners in the test part)")
    loaded = _read(args, modes)
    erased = {} if args.include_erased else erased_for(args, settings)
    frame, skipped, learners = without_erased(loaded.frame, erased)
    if skipped:
        print(f"{skipped} attempts of {learners} erased learners skipped", file=sys.stderr)
    return history_of(frame, split=args.split, part=args.part or default_part)


def _cmd_fit(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.metrics.fitting import Bounds, FitOptions
    from performance_engine.tools.learning import fit

    modes = load_learning_modes(settings.learning_modes_path)
    history = _history(args, settings, modes, "train")
    if not len(history.frame):
        raise InputFileError(f"{args.source}: no attempts to fit on")
    bounds = Bounds(guess=(0.01, args.max_guess), slip=(0.01, args.max_slip))
    if not (args.max_guess < 0.5 and args.max_slip < 0.5):
        raise ConfigurationError("--max-guess and --max-slip must stay below 0.5")
    options = FitOptions(bounds=bounds, forget=args.forget)
    with _bar(args.quiet) as bar:
        task = bar.add_task("fitting (EM)", total=1)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        found = fit(
            history,
            modes,
            options=options,
            min_learners=args.min_learners,
            min_attempts=args.min_attempts,
            per_question=args.per_question,
            source={
                "history": _describe(args),
                "split": args.split,
                "part": args.part or ("train" if args.split is not None else None),
            },
            progress=progress,
        )
    args.out.write_text(json.dumps(found.to_dict(), indent=1) + "\n", encoding="utf-8")
    _report(found, Console())
    print(f"wrote {args.out} (version {found.version})")
    return 0


def _describe(args: argparse.Namespace) -> str:
    if "://" not in args.source:
        return str(args.source)
    from performance_engine.platform.outbox import redacted_url

    what = f"query {args.query!r}" if args.query else f"table {args.table}"
    return f"{what} on {redacted_url(args.source)}"


def _report(found: ParameterSet, console: Console) -> None:
    table = Table(title=f"fitted parameters {found.version}")
    for name in ("mode", "sub-topic", "learners", "attempts", "log-likelihood", "parameters"):
        table.add_column(name, justify="left" if name in ("mode", "parameters") else "right")
    for (mode, sub), g in sorted(found.groups.items()):
        guess = "/".join(f"{x:.2f}" for x in g.guess)
        slip = "/".join(f"{x:.2f}" for x in g.slip)
        forget = f" F {g.forget:.3f}" if g.forget else ""
        table.add_row(
            mode,
            str(sub),
            f"{g.learners:,}",
            f"{g.attempts:,}",
            f"{g.log_likelihood:,.1f}",
            f"prior {g.prior:.2f} T {g.learn:.3f}{forget} G {guess} S {slip}",
        )
    for kept in found.kept:
        table.add_row(
            kept["learning_mode"],
            str(kept["sub_topic_id"]),
            f"{kept['learners']:,}",
            f"{kept['attempts']:,}",
            "",
            kept["reason"],
        )
    console.print(table)
    if found.questions:
        counts = [sum(1 for c in found.questions.values() if c == d) for d in range(3)]
        console.print(
            f"question classes learned from the answers: {counts[0]:,} easy, "
            f"{counts[1]:,} medium, {counts[2]:,} hard"
        )


def _cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.tools.learning import evaluate

    modes = load_learning_modes(settings.learning_modes_path)
    params = load_parameter_file(args.params or settings.learning_params_path)
    history = _history(args, settings, modes, "test")
    found = evaluate(history, modes, params)
    if args.predictions is not None:
        with args.predictions.open("w", encoding="utf-8") as out:
            out.write("attempt_id,p\n")
            for attempt_id, p in zip(found.attempt_ids, found.predictions.tolist(), strict=True):
                out.write(f"{_csv(attempt_id)},{p!r}\n")
    summary = found.summary()
    if args.report is not None:
        from performance_engine.tools.report import write_report

        outcome = history.frame["is_correct"].to_numpy(bool)
        write_report(args.report, outcome, found.predictions, summary)
    if args.json:
        print(json.dumps(summary))
    else:
        score = "n/a" if summary["auc"] is None else f"{summary['auc']:.4f}"
        print(
            f"{summary['count']:,} attempts predicted with {summary['params_version']}: "
            f"AUC {score}, RMSE {summary['rmse']:.4f}, log-loss {summary['log_loss']:.4f}"
        )
    return 0 if found.count else 1  # nothing to predict: nothing measured


def _cmd_params_publish(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.store.params import publish_params
    from performance_engine.store.stats_store import StatsStore

    found = load_parameter_file(args.file)
    assert found is not None  # a path was given
    with StatsStore.from_settings(settings) as store:
        version = publish_params(store, found)
    print(
        f"published {version} ({len(found.groups)} fitted groups); "
        "workers use it from their next batch"
    )
    return 0


def _cmd_params_show(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.store.params import published_params
    from performance_engine.store.stats_store import StatsStore

    with StatsStore.from_settings(settings) as store:
        published = published_params(store)
    found = load_parameter_file(settings.learning_params_path)
    if published is not None:
        groups = len(published.groups)
        print(f"in force: {published.version}, published to Redis ({groups} fitted groups)")
    elif found is not None:
        print(f"in force: {found.version}, from {settings.learning_params_path}")
    else:
        print("in force: the learning modes' parameters (no fitted set published or configured)")
    return 0


def _cmd_params_withdraw(args: argparse.Namespace, settings: Settings) -> int:
    from performance_engine.store.params import withdraw_params
    from performance_engine.store.stats_store import StatsStore

    with StatsStore.from_settings(settings) as store:
        removed = withdraw_params(store)
    print("withdrawn" if removed else "nothing was published")
    return 0


def _cmd_refold(args: argparse.Namespace, settings: Settings) -> int:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from performance_engine.broker import broker_failed
    from performance_engine.connections import kafka_python_options
    from performance_engine.events import partition_index
    from performance_engine.plugins import build_calculator
    from performance_engine.store.stats_store import StatsStore
    from performance_engine.tools.refold import RefoldReport, refold

    calculator = build_calculator(settings)
    if args.mode is not None:
        args.mode = calculator.learning_modes.normalise(args.mode)
    console = Console(stderr=True)

    def progress(report: RefoldReport) -> None:
        if not args.quiet:
            console.print(f"{report.scanned:,} scopes read, {report.refolded:,} refolded", end="\r")

    with StatsStore.from_settings(settings) as store:
        store.ping()
        try:
            producer = KafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap.split(","),
                acks="all",
                linger_ms=5,
                **kafka_python_options(settings),
            )
        except KafkaError as exc:
            raise broker_failed(settings, exc) from exc
        partitions = sorted(producer.partitions_for(settings.stats_topic) or [0])

        def send(key: bytes, value: bytes) -> None:  # where the worker sends a scope's events
            partition = partitions[partition_index(key, len(partitions))]
            producer.send(settings.stats_topic, key=key, value=value, partition=partition)

        try:
            report = refold(
                store,
                calculator,
                send,
                sub_topic_id=args.sub_topic,
                learning_mode=args.mode,
                flush=producer.flush,
                progress=progress,
            )
        finally:
            producer.close()
    version = calculator.parameters.version if calculator.parameters is not None else "the modes'"
    print(
        f"refolded {report.refolded:,} of {report.scanned:,} scopes with {version} parameters; "
        f"{report.current:,} were current, {report.incomplete:,} have an incomplete history "
        "(backfill the platform's history to rebuild it)"
    )
    return 0


def _csv(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _bar(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.completed:>5}/{task.total:<5} iterations"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet,
        transient=False,
    )
