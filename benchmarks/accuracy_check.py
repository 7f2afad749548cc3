"""Accuracy must not pay for speed: textcnn vs the seed's reference model, 3 seeds on sst2 and trec.

Run through ``python benchmarks/speed.py --accuracy``. Both models get the seed's shape
(embedding 256, 100 filters, windows 3-6, length 35), batch 64, Adam at 1e-3, dropout 0.5,
10 epochs with the best dev epoch kept, and identical token ids (textcnn's tokenizer and
vocabulary). Everything else is each system's own default.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from reference import SeedConfig, SeedTextCNN, fit, pad_to_length, predict_logits
from speed import SHAPE, read_csv

DATASETS = ("sst2", "trec")
SEEDS = (0, 1, 2)
EPOCHS = 10


def run_pair(data_dir, name: str, seed: int) -> dict:
    from textcnn import TextCNNClassifier

    split = {s: read_csv(data_dir / name / f"{s}.csv", 10**9) for s in ("train", "dev", "test")}
    started = time.perf_counter()
    clf = TextCNNClassifier(**SHAPE, max_text_len=35, epochs=EPOCHS, seed=seed, verbose=0)
    clf.fit(*split["train"], validation_data=split["dev"])
    textcnn = {"accuracy": clf.score(*split["test"]), "seconds": time.perf_counter() - started}
    index = {c: i for i, c in enumerate(clf.classes_)}

    def tensors(part):
        texts, labels = split[part]
        return pad_to_length(clf.encode(texts), 35), torch.tensor([index[c] for c in labels])

    started = time.perf_counter()
    torch.manual_seed(seed)
    model = SeedTextCNN(SeedConfig(vocab_size=len(clf.vocab_), num_class=len(index)))
    fit(model, tensors("train"), tensors("dev"), epochs=EPOCHS, batch_size=SHAPE["batch_size"], seed=seed)
    x, y = tensors("test")
    reference = {"accuracy": float((predict_logits(model, x).argmax(1) == y).float().mean()),
                 "seconds": time.perf_counter() - started}
    return {"dataset": name, "seed": seed, "textcnn": textcnn, "reference": reference}


def main(args) -> int:
    rows = []
    for name in DATASETS:
        for seed in SEEDS:
            rows.append(run_pair(args.data_dir, name, seed))
            r = rows[-1]
            print(f"{name} seed {seed}: reference {r['reference']['accuracy']:.4f} ({r['reference']['seconds']:.0f}s)  "
                  f"textcnn {r['textcnn']['accuracy']:.4f} ({r['textcnn']['seconds']:.0f}s)", flush=True)
    print("\n| data | reference (mean of 3) | textcnn (mean of 3) | textcnn - reference, points |\n|---|---:|---:|---:|")
    for name in DATASETS:
        ref = [r["reference"]["accuracy"] for r in rows if r["dataset"] == name]
        ours = [r["textcnn"]["accuracy"] for r in rows if r["dataset"] == name]
        print(f"| {name} | {statistics.mean(ref):.4f} ± {statistics.stdev(ref):.4f} | "
              f"{statistics.mean(ours):.4f} ± {statistics.stdev(ours):.4f} | "
              f"{100 * (statistics.mean(ours) - statistics.mean(ref)):+.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0
