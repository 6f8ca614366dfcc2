"""The ASSISTments 2017 folds (``../shared/data/assist2017``, see its README) as attempts.

Each learner of a fold file is four lines: ``index,original user id``, the problems (as
indexes), their skills, and 1/0 for a right first answer, in the learner's order. As
attempts: ``user_id`` the original id, ``sub_topic_id`` the skill index, ``question_id``
the problem index, ``attempt_id`` "<user>-<position>", ``occurred_at`` one second apart
in the learner's order from 2017-01-01 (the files keep no times; this keeps the order),
mode ``standard`` and ``difficulty`` "medium" for all: the data has no difficulty label,
so a model that wants one learns it from the answers.

    python bench/assist2017.py --folds 1,2,3,4 --out train.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "assist2017"
START_MS = 1_483_228_800_000  # 2017-01-01T00:00:00Z


def read_fold(path: Path) -> pd.DataFrame:
    """One fold file's answers as a frame of SPEC 2 attempts."""
    lines = path.read_text(encoding="utf-8").split()
    frames = []
    for at in range(0, len(lines), 4):
        user = int(lines[at].split(",")[1])
        problems = [int(x) for x in lines[at + 1].split(",")]
        skills = [int(x) for x in lines[at + 2].split(",")]
        right = [x == "1" for x in lines[at + 3].split(",")]
        n = len(problems)
        frames.append(
            pd.DataFrame(
                {
                    "attempt_id": [f"{user}-{i}" for i in range(n)],
                    "user_id": user,
                    "sub_topic_id": skills,
                    "learning_mode": "standard",
                    "question_id": problems,
                    "difficulty": "medium",
                    "is_correct": right,
                    "occurred_at": [START_MS + 1000 * i for i in range(n)],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def read_folds(folds: list[int], data: Path = DATA) -> pd.DataFrame:
    return pd.concat(
        [read_fold(data / f"assist2017_pid_test{k}.csv") for k in folds], ignore_index=True
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="1,2,3,4,5")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, required=True, help=".parquet or .csv")
    args = parser.parse_args()
    frame = read_folds([int(k) for k in args.folds.split(",")], args.data)
    if args.out.suffix == ".csv":
        frame.to_csv(args.out, index=False)
    else:
        frame.to_parquet(args.out, index=False)
    print(f"{len(frame):,} attempts of {frame['user_id'].nunique():,} learners -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
