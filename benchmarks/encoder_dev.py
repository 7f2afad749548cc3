"""Dev choices for --encoder (benchmarks/README.md, "Encoder input: dev choices"): dev accuracy only, never test.

Each text's encoder states are computed once and kept on disk (TEXTCNN_ENCODER_MEMORY_MB=0 puts them in
--cache-dir), so every setting after the first on a data set trains only the head. One JSON line per run.

    python benchmarks/encoder_dev.py --datasets mr,sst2,trec --settings '[{"learning_rate": 0.001}]' --seeds 0 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

from textcnn import TextCNNClassifier


def read(data_dir: Path, name: str, split: str) -> tuple[list[str], list[str]]:
    with open(data_dir / name / f"{split}.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets")
    p.add_argument("--datasets", default="mr,sst2,trec")
    p.add_argument("--encoder", default="minilm-l6")
    p.add_argument("--settings", default="[{}]", help="a JSON list of TextCNNConfig overrides, one run each")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--cache-dir", type=Path, default=Path("runs/encoder-states"))
    args = p.parse_args()
    os.environ.setdefault("TEXTCNN_ENCODER_MEMORY_MB", "0")  # states on disk: reused by every setting
    for name in args.datasets.split(","):
        train, dev = read(args.data_dir, name, "train"), read(args.data_dir, name, "dev")
        for setting in json.loads(args.settings):
            for seed in args.seeds:
                started = time.perf_counter()
                clf = TextCNNClassifier(encoder=args.encoder, verbose=0, **{**setting, "seed": seed})
                clf.fit(*train, validation_data=dev, cache_dir=args.cache_dir)
                curve = [round(h["dev_accuracy"], 4) for h in clf.history_]
                print(json.dumps({"dataset": name, **setting, "seed": seed, "best_dev": max(curve),
                                  "best_epoch": clf.best_epoch_, "curve": curve,
                                  "seconds": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
