"""``perf-engine evaluate --report DIR``: a calibration chart of the predictions.

Predictions are cut into ten bins of width 0.1; for each bin the chart plots the mean
predicted probability against the share of those answers that were right, with the
diagonal where the two agree. A point below the diagonal means the engine promised more
than learners delivered (70% predicted, 60% observed), above it less. Under the chart, how
many answers fell into each bin, so that a reader weighs each point by its data. Written as
``calibration.png`` and ``calibration.html`` (the picture, the scores and the bins as a
table, in one self-contained page).

matplotlib comes with the ``report`` extra (``pip install 'performance-engine[report]'``).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from performance_engine.errors import ConfigurationError

__all__ = ["CalibrationBin", "calibration_bins", "write_report"]

Array = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class CalibrationBin:
    """The answers whose prediction fell in ``[low, high)`` (the last bin includes 1)."""

    low: float
    high: float
    count: int
    predicted: float  # their mean prediction (NaN when empty)
    observed: float  # the share of them answered right (NaN when empty)


def calibration_bins(outcome: Array, p: Array, bins: int = 10) -> list[CalibrationBin]:
    right = np.asarray(outcome, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    sums = np.bincount(index, weights=p, minlength=bins)
    rights = np.bincount(index, weights=right, minlength=bins)
    found = []
    for b in range(bins):
        n = int(counts[b])
        found.append(
            CalibrationBin(
                b / bins,
                (b + 1) / bins,
                n,
                sums[b] / n if n else float("nan"),
                rights[b] / n if n else float("nan"),
            )
        )
    return found


def _chart(bins: list[CalibrationBin], title: str) -> bytes:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        raise ConfigurationError(
            "--report draws with matplotlib: pip install 'performance-engine[report]'"
        ) from None
    full = [b for b in bins if b.count]
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(6.4, 7.2), height_ratios=(3, 1), sharex=True, layout="constrained"
    )
    top.plot(
        [0, 1], [0, 1], color="#888888", linestyle="--", linewidth=1, label="perfectly calibrated"
    )
    top.plot(
        [b.predicted for b in full],
        [b.observed for b in full],
        marker="o",
        color="#1f6fb4",
        linewidth=2,
        label="the engine's predictions",
    )
    for b in full:
        top.annotate(
            f"{b.observed:.0%}",
            (b.predicted, b.observed),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=8,
        )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("share answered right (observed)")
    top.set_title(title, fontsize=10)
    top.grid(True, color="#dddddd")
    top.set_xticks(np.linspace(0, 1, 11))
    top.set_yticks(np.linspace(0, 1, 11))
    top.legend(loc="upper left", fontsize=9)
    centres = [(b.low + b.high) / 2 for b in bins]
    bottom.bar(centres, [b.count for b in bins], width=0.09, color="#9ec3e6")
    bottom.set_xlabel("predicted probability of a right answer")
    bottom.set_ylabel("answers")
    bottom.grid(True, axis="y", color="#dddddd")
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=110)
    plt.close(figure)
    return out.getvalue()


def write_report(
    directory: Path, outcome: Array, p: Array, summary: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``calibration.png`` and ``calibration.html`` into ``directory``."""
    bins = calibration_bins(outcome, p)
    auc = "n/a" if summary.get("auc") is None else f"{summary['auc']:.4f}"
    title = (
        f"{summary['count']:,} answers, parameters {summary['params_version']}\n"
        f"AUC {auc} · log-loss {summary['log_loss']:.4f} · RMSE {summary['rmse']:.4f}"
    )
    picture = _chart(bins, title)
    directory.mkdir(parents=True, exist_ok=True)
    png = directory / "calibration.png"
    png.write_bytes(picture)
    rows = "\n".join(
        f"<tr><td>{b.low:.1f}&ndash;{b.high:.1f}</td><td>{b.count:,}</td>"
        + (
            f"<td>{b.predicted:.3f}</td><td>{b.observed:.3f}</td>"
            if b.count
            else "<td>&ndash;</td><td>&ndash;</td>"
        )
        + "</tr>"
        for b in bins
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Calibration</title>
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;color:#222}}
table{{border-collapse:collapse}}
td,th{{padding:.2rem .8rem;text-align:right;border-bottom:1px solid #ddd}}</style>
</head><body>
<h1>Calibration of next-answer predictions</h1>
<p>{html.escape(title).replace(chr(10), "<br>")}</p>
<p>Each point is the answers whose prediction fell in one tenth of the scale: across, their
mean prediction; up, the share of them answered right. On the dashed diagonal the
predictions mean what they say; below it they promise more than learners delivered.</p>
<img alt="calibration chart" src="data:image/png;base64,{base64.b64encode(picture).decode()}">
<table><thead><tr><th>predicted</th><th>answers</th><th>mean predicted</th>
<th>observed</th></tr></thead><tbody>
{rows}
</tbody></table>
</body></html>
"""
    page_path = directory / "calibration.html"
    page_path.write_text(page, encoding="utf-8")
    return png, page_path
