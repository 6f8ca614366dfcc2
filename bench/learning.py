"""Learning benchmark: next-answer prediction on ASSISTments 2017, five folds.

    .venv/bin/python bench/learning.py                 # all five folds
    .venv/bin/python bench/learning.py --folds 1       # fold 1 alone, a quick run

The data is ``../shared/data/assist2017`` (see its README and ``bench/assist2017.py``).
For each scored fold the other four are the training learners; every contender is fitted
on them and predicts each answer of the scored fold's learners from their earlier answers
only. Contenders, measured in the same run:

- the engine with its default parameters (nothing fitted);
- the item success rate: each problem's share of right answers among the training
  learners (shrunk towards its skill's by ten pseudo-answers; the skill's, then everyone's,
  for a problem never seen), the same for every learner;
- the engine's fit per skill (``perf-engine fit``), guess and slip per difficulty class;
- the same with per-question difficulty classes and offsets (``--per-question``);
- pyBKT 1.4 (``pip install pyBKT``; it installs in pure Python here) fitted per skill
  with ``multigs`` on the difficulty column and ``num_fits`` starting points, on the folds
  of ``--pybkt-folds`` (fold 1 by default: it takes many minutes per fold).

    .venv/bin/python bench/learning.py --pybkt-folds 1      # the table of docs/learning.md

Prints one table: AUC, RMSE and log-loss (mean and spread over the folds), fit seconds and
predictions per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for assist2017

from assist2017 import DATA, read_fold

from performance_engine.metrics.fitting import auc, log_loss, rmse
from performance_engine.metrics.frame import normalise_frame
from performance_engine.metrics.modes import LearningModes
from performance_engine.tools.learning import History, evaluate, fit, history_of

Scores = dict[str, float]


def item_baseline(train: History, test: History) -> tuple[Any, float]:
    """Each test answer's problem's success rate among the training learners."""
    start = time.perf_counter()
    rows = train.frame
    right = rows["is_correct"].to_numpy(np.float64)
    overall = right.mean()
    by_skill = rows.groupby("sub_topic_id")["is_correct"].mean()
    by_item = rows.groupby("question_id")["is_correct"].agg(["sum", "count"])
    skill_of_item = rows.groupby("question_id")["sub_topic_id"].first()
    base = skill_of_item.map(by_skill).fillna(overall)
    rate = (by_item["sum"] + 10 * base) / (by_item["count"] + 10)
    seconds = time.perf_counter() - start
    questions = test.frame["question_id"]
    skills = test.frame["sub_topic_id"].map(by_skill).fillna(overall)
    predicted = questions.map(rate).fillna(skills).to_numpy(np.float64)
    return predicted, seconds


def pybkt_contender(train: History, test: History, fits: int) -> tuple[Any, float, float]:
    """pyBKT 1.4 fitted per skill (``multigs`` per difficulty) on the training learners;
    its one-step predictions of the scored learners' answers, in the engine's row order.
    Returns the predictions, the fit's seconds and the prediction's seconds."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pyBKT.fit.EM_fit as em_fit
        from pyBKT.models import Model

    run = em_fit.run

    def run_with_a_scalar_likelihood(*a: Any, **k: Any) -> Any:
        # pyBKT 1.4 stores a one-element array where it wants a number; NumPy 2 refuses.
        result = run(*a, **k)
        result["total_loglike"] = float(np.sum(result["total_loglike"]))
        return result

    em_fit.run = run_with_a_scalar_likelihood

    def as_pybkt(history: History) -> pd.DataFrame:
        frame = history.frame
        return pd.DataFrame(
            {
                "order_id": np.arange(len(frame)),
                "user_id": frame["user_id"].to_numpy(),
                "skill_name": frame["sub_topic_id"].astype(str).to_numpy(),
                "correct": frame["is_correct"].astype(int).to_numpy(),
                "difficulty": frame["difficulty"].astype(str).to_numpy(),
            }
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Model(seed=7, num_fits=fits, parallel=False)
        start = time.perf_counter()
        model.fit(data=as_pybkt(train), multigs="difficulty")
        fitted = time.perf_counter() - start
        start = time.perf_counter()
        found = model.predict(data=as_pybkt(test))
        predicting = time.perf_counter() - start
    found = found.sort_values("order_id")
    return found["correct_predictions"].to_numpy(np.float64), fitted, predicting


def scores(outcome: Any, predicted: Any) -> Scores:
    return {
        "auc": auc(outcome, predicted),
        "rmse": rmse(outcome, predicted),
        "log_loss": log_loss(outcome, predicted),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="1,2,3,4,5", help="the folds to score")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--pybkt-folds", default="1", help="the folds pyBKT is fitted on ('' for none)"
    )
    parser.add_argument("--pybkt-fits", type=int, default=3, help="pyBKT's num_fits")
    args = parser.parse_args()
    pybkt_folds = {int(x) for x in args.pybkt_folds.split(",") if x}
    console = Console(width=120)
    modes = LearningModes.default()
    frames = {k: read_fold(args.data / f"assist2017_pid_test{k}.csv") for k in range(1, 6)}
    normalised = {k: normalise_frame(f, modes).frame for k, f in frames.items()}
    results: dict[str, list[tuple[Scores, float, float]]] = {}

    def record(name: str, found: Scores, fit_seconds: float, per_second: float) -> None:
        results.setdefault(name, []).append((found, fit_seconds, per_second))

    for k in [int(x) for x in args.folds.split(",")]:
        train = history_of(pd.concat([normalised[j] for j in range(1, 6) if j != k]))
        test = history_of(normalised[k])
        outcome = test.frame["is_correct"].to_numpy(bool)
        console.print(f"fold {k}: {len(train.frame):,} training answers, {len(outcome):,} scored")

        start = time.perf_counter()
        found = evaluate(test, modes, None)
        record("engine, default parameters", scores(outcome, found.predictions), 0.0,
               len(outcome) / (time.perf_counter() - start))  # fmt: skip

        predicted, seconds = item_baseline(train, test)
        record("item success rate", scores(outcome, predicted), seconds, float("nan"))

        for name, per_question in (
            ("engine, fitted per skill", False),
            ("engine, fitted, per-question classes and offsets", True),
        ):
            start = time.perf_counter()
            params = fit(train, modes, per_question=per_question)
            fitted = time.perf_counter() - start
            start = time.perf_counter()
            found = evaluate(test, modes, params)
            rate = len(outcome) / (time.perf_counter() - start)
            record(name, scores(outcome, found.predictions), fitted, rate)
            if per_question:
                engine_fit = fitted

        if k in pybkt_folds:
            console.print(f"fold {k}: fitting pyBKT ({args.pybkt_fits} starts) ...")
            predicted, fitted, predicting = pybkt_contender(train, test, args.pybkt_fits)
            record(
                f"pyBKT 1.4, multigs, per skill (fold {k})",
                scores(outcome, predicted),
                fitted,
                len(outcome) / predicting,
            )
            console.print(
                f"fold {k}: pyBKT's fit took {fitted:.0f} s, {fitted / engine_fit:.0f}x the "
                f"engine's fit with per-question classes and offsets ({engine_fit:.1f} s)"
            )

    table = Table(title=f"next-answer prediction, ASSISTments 2017, folds {args.folds}")
    for column in ("contender", "AUC", "RMSE", "log-loss", "fit s", "predictions/s"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    spread: Callable[[list[float]], str] = lambda v: (  # noqa: E731
        f"{statistics.mean(v):.4f} ± {statistics.pstdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"
    )
    for name, runs in results.items():
        table.add_row(
            name,
            spread([r[0]["auc"] for r in runs]),
            spread([r[0]["rmse"] for r in runs]),
            spread([r[0]["log_loss"] for r in runs]),
            f"{statistics.mean(r[1] for r in runs):.1f}",
            "-" if np.isnan(runs[0][2]) else f"{statistics.mean(r[2] for r in runs):,.0f}",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
