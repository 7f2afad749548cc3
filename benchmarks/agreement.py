"""Prediction fast paths against the plain float32 forward, on real test sets.

    python benchmarks/agreement.py [--data-dir ../shared/datasets]

For sst2 and trec (length 35) and a 2,000-review IMDB subsample (length 400), trains textcnn with
the speed benchmark's shape (embedding 256, 100 filters, windows 3-6) for 3 epochs, then compares,
on every test text, the logits of the plain float32 model forward with (a) the batched path
(embedding_bag over length-sorted batches) and (b) the single-text path (the fused numba kernel,
one text per call). Prints the share of identical labels and the largest probability difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from speed import SHAPE, read_csv  # noqa: E402

RUNS = {"sst2": (35, 10**9, 10**9), "trec": (35, 10**9, 10**9), "imdb": (400, 2000, 2000)}


def compare(name: str, data_dir: Path) -> dict:
    from textcnn import TextCNNClassifier

    max_len, n_train, n_test = RUNS[name]
    train = read_csv(data_dir / name / "train.csv", n_train)
    test_x, _ = read_csv(data_dir / name / "test.csv", n_test)
    clf = TextCNNClassifier(**SHAPE, max_text_len=max_len, epochs=3, patience=3, seed=0, verbose=0).fit(*train)
    ids = clf.encode(test_x)
    plain = torch.softmax(clf._logits_from_ids(ids, fast=False), dim=1).numpy()
    batched = torch.softmax(clf._logits_from_ids(ids), dim=1).numpy()
    single = torch.softmax(torch.cat([clf._logits_from_ids([x]) for x in ids]), dim=1).numpy()
    row = {"data": name, "texts": len(ids), "path": clf._predictor.path(clf.model_, torch.device("cpu"))}
    for label, p in (("batched", batched), ("single", single)):
        row[f"{label}_same_label"] = float((p.argmax(1) == plain.argmax(1)).mean())
        row[f"{label}_max_prob_diff"] = float(np.abs(p - plain).max())
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    args = p.parse_args()
    print("| data | test texts | batched: same label | batched: max abs prob diff | single: same label | "
          "single: max abs prob diff |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in RUNS:
        r = compare(name, args.data_dir)
        print(f"| {name} | {r['texts']} | {r['batched_same_label']:.2%} | {r['batched_max_prob_diff']:.1e} | "
              f"{r['single_same_label']:.2%} | {r['single_max_prob_diff']:.1e} |", flush=True)
    print(f"\npath: {r['path']}")


if __name__ == "__main__":
    main()
