"""Dev runs for the n-gram channel's default: textcnn's defaults with ngram_features / ngram_embedding_size varied.

Scores DEV sets only (never test): each run trains on train.csv with dev.csv for early stopping and
reports the best dev accuracy, the epoch it came from, the channel's table size and the n-grams'
bucket collisions. One JSON line per run is appended to --json, so an interrupted sweep resumes.

    python benchmarks/ngram_channel.py --datasets mr sst2 trec --seeds 0 1 --settings 0x0 131072x100 262144x16
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch

from textcnn import TextCNNClassifier
from textcnn.model import gram_bucket, ngram_spans


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def distinct_ngrams(clf: TextCNNClassifier, texts: list[str]) -> set[tuple[int, ...]]:
    """The id tuples of the training texts' n-grams, up to the model's ``ngram_order``."""
    out = set()
    for ids in clf.encode(texts):
        out.update(tuple(ids[s:e]) for s, e in ngram_spans(len(ids), clf.model_.ngram_order))
    return out


def collisions(grams: set[tuple[int, ...]], buckets: int) -> float:
    """Share of distinct training n-grams that share their bucket with another one."""
    counts: dict[int, int] = {}
    for gram in grams:
        h = gram_bucket(gram, buckets)
        counts[h] = counts.get(h, 0) + 1
    return sum(c for c in counts.values() if c > 1) / max(len(grams), 1)


def run(data: Path, dataset: str, setting: str, seed: int, extra: dict | None = None) -> dict:
    buckets, size = (int(x) for x in setting.split("x"))
    x_train, y_train = read_csv(data / dataset / "train.csv")
    x_dev, y_dev = read_csv(data / dataset / "dev.csv")
    params = dict(ngram_features=buckets, ngram_embedding_size=size or 100, **(extra or {}))
    clf = TextCNNClassifier(seed=seed, verbose=0, **params)
    started = time.perf_counter()
    clf.fit(x_train, y_train, validation_data=(x_dev, y_dev))
    seconds = time.perf_counter() - started
    best = max(clf.history_, key=lambda e: (e["dev_accuracy"], -e["dev_loss"]))
    row = {"dataset": dataset, "setting": setting, "seed": seed, **({"set": extra} if extra else {}), "dev_accuracy": best["dev_accuracy"],
           "best_epoch": best["epoch"], "epochs": len(clf.history_), "train_seconds": round(seconds, 1)}
    if buckets:
        pairs = distinct_ngrams(clf, x_train)
        row.update(table_mb=round(clf.model_.ngram_embedding.weight.numel() * 4 / 2**20, 1),
                   train_ngrams=len(pairs), collided=round(collisions(pairs, buckets), 3))
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    p.add_argument("--datasets", nargs="+", default=["mr", "sst2", "trec"])
    p.add_argument("--settings", nargs="+", default=["0x0", "131072x100", "262144x16"],
                   help="BUCKETSxSIZE: ngram_features x ngram_embedding_size (0x0: no channel)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="another TextCNNClassifier setting for every run, e.g. epochs=15 (recorded in each line)")
    p.add_argument("--json", type=Path, default=Path("ngram-dev.jsonl"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    done = set()
    extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.json.exists():
        done = {(r["dataset"], r["setting"], r["seed"], json.dumps(r.get("set", {}), sort_keys=True))
                for r in map(json.loads, args.json.read_text().splitlines())}
    for dataset in args.datasets:
        for seed in args.seeds:
            for setting in args.settings:
                if (dataset, setting, seed, json.dumps(extra, sort_keys=True)) in done:
                    continue
                row = run(args.data_dir, dataset, setting, seed, extra)
                print(json.dumps(row), flush=True)
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
