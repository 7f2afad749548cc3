"""End-to-end prediction speed of an encoder model on SST-2 test (texts/s), per encoder batch size.

The head is trained for one epoch on 200 dev texts (its weights do not change the speed); then
``clf.predict`` runs on the whole test set (tokenize, encoder in length-sorted batches, head), best
of ``--repeats``. Times mean something only on an otherwise idle machine: the load average is printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import torch

import textcnn.encoder as E
from textcnn import TextCNNClassifier


def texts_of(path: Path) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets")
    p.add_argument("--encoder", default="minilm-l6")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--float32", action="store_true", help="also time float32 weights")
    args = p.parse_args()
    test, _ = texts_of(args.data_dir / "sst2" / "test.csv")
    dev = texts_of(args.data_dir / "sst2" / "dev.csv")
    clf = TextCNNClassifier(encoder=args.encoder, epochs=1, verbose=0).fit(dev[0][:200], dev[1][:200])
    variants = [(b, None) for b in args.batches] + ([(64, torch.float32)] if args.float32 else [])
    for batch, dtype in variants:
        if dtype is not None:
            clf.tokenizer_.model().to(dtype)
        E.ENCODE_BATCH, E.ENCODE_TOKENS = batch, batch * 128
        clf.predict(test[:64])  # warm-up
        best = 0.0
        for _ in range(args.repeats):
            started = time.perf_counter()
            clf.predict(test)
            best = max(best, len(test) / (time.perf_counter() - started))
        weights = str(next(clf.tokenizer_.model().parameters()).dtype).removeprefix("torch.")
        print(json.dumps({"texts": len(test), "encoder_batch": batch, "weights": weights, "texts_per_s": round(best),
                          "threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
