"""MR under Kim's (2014) protocol: 10-fold cross-validation instead of the fixed train/dev/test split.

    python benchmarks/kim_cv.py --data-dir ../shared/datasets [--folds 10] [--systems ...]

Kim reports MR as the mean over 10 folds of all 10,662 sentences (10% of each fold's training part held
out as dev for early stopping). ``benchmarks/accuracy.py`` uses the fixed split that ships in
``mr/`` instead, whose test part turned out harder than its dev part for every system. This script
pools ``train``, ``dev`` and ``test`` of ``mr``, deals them into stratified folds with a fixed seed, and
runs the same four systems as ``accuracy.py`` (same code, same tuning on each fold's dev part; textcnn
with its defaults) on every fold. It answers "is textcnn's CNN-rand at Kim's number under Kim's
protocol?"; the issue's bars stay defined on the fixed split. Results: ``results/kim-cv.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from accuracy import SPECS, SYSTEMS, Split, _atomic_write, load_dataset, run_system  # noqa: E402


def folds_of(labels: list, n_folds: int, seed: int) -> list[int]:
    """A fold number per row: each label's rows shuffled and dealt round-robin (stratified)."""
    rng = random.Random(seed)
    fold = [0] * len(labels)
    for label in sorted(set(labels)):
        rows = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(rows)
        for n, i in enumerate(rows):
            fold[i] = n % n_folds
    return fold


def subset(split: Split, rows: list[int]) -> Split:
    return Split([split.texts[i] for i in rows], [split.labels[i] for i in rows], [split.tokens[i] for i in rows])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    p.add_argument("--seed", type=int, default=13, help="seed of the fold assignment and the dev carve-out")
    p.add_argument("--results", type=Path, default=HERE / "results" / "kim-cv.json")
    args = p.parse_args(argv)
    parts = load_dataset(args.data_dir / "mr", SPECS["mr"].multi_label)
    pooled = Split(*(sum((getattr(s, f) for s in parts), []) for f in ("texts", "labels", "tokens")))
    fold = folds_of(pooled.labels, args.folds, args.seed)
    rng = random.Random(args.seed)
    results: dict = {"protocol": f"{args.folds}-fold CV of all {len(pooled.texts)} MR sentences, fold seed "
                                 f"{args.seed}, 10% of each training part as dev", "runs": {s: [] for s in args.systems}}
    for k in range(args.folds):
        rest = [i for i in range(len(fold)) if fold[i] != k]
        rng.shuffle(rest)
        n_dev = len(rest) // 10
        data = (subset(pooled, rest[n_dev:]), subset(pooled, rest[:n_dev]),
                subset(pooled, [i for i in range(len(fold)) if fold[i] == k]))
        for system in args.systems:
            run = run_system(system, "mr", data, k, args.data_dir, {})
            results["runs"][system].append(run)
            print(f"fold {k} {system:16s} test {run['test']:.2f} dev {run['dev']:.2f} {run['seconds']:.1f}s", flush=True)
        _atomic_write(args.results, json.dumps(results, indent=1))
    print(f"\nMR, {results['protocol']}: mean test accuracy % over folds (± std)")
    for system, runs in results["runs"].items():
        tests = [r["test"] for r in runs]
        print(f"  {system:16s} {statistics.fmean(tests):.2f} ± {statistics.stdev(tests) if len(tests) > 1 else 0:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
