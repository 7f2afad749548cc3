"""Training speed on a CUDA GPU against this machine's CPU (issue 13): IMDB at length 400, and the seed config.

    python benchmarks/gpu.py                       # needs a CUDA GPU; data from ../shared/datasets
    python benchmarks/gpu.py --data-dir DIR --texts 5000 --out benchmarks/results/gpu.json

For each configuration ("long": max_text_len 400, the seed's shapes otherwise; "seed": the seed
tutorial's max_text_len 35) one epoch is trained on ``--texts`` IMDB reviews on the CPU (float32,
and bfloat16 autocast where the CPU has it) and on the GPU (float32, bfloat16 autocast, and
float16 autocast with a GradScaler): training texts/s from the history, and dev accuracy after
``--epochs`` epochs. Without a GPU it says so and exits with status 3 (nothing is written).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

CONFIGS = {"long": {"max_text_len": 400}, "seed": {"max_text_len": 35}}


def read_csv(path: Path, limit: int) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            texts.append(row["text"])
            labels.append(row["label"])
            if len(texts) >= limit:
                break
    return texts, labels


def one(device: str, precision: str, config: dict, data, epochs: int) -> dict:
    import torch

    from textcnn import TextCNNClassifier

    (x, y), (dx, dy) = data
    clf = TextCNNClassifier(**config, epochs=epochs, patience=epochs, device=device, precision=precision, verbose=0)
    started = time.perf_counter()
    clf.fit(x, y, validation_data=(dx, dy))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {"device": device, "precision": precision, "wall_seconds": round(time.perf_counter() - started, 1),
            "train_texts_per_s": round(max(h["texts_per_s"] for h in clf.history_)),
            "dev_accuracy": round(clf.history_[-1]["dev_accuracy"], 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    parser.add_argument("--texts", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "gpu.json"))
    args = parser.parse_args()
    import torch

    from textcnn.fastpath import native_bf16

    if not torch.cuda.is_available():
        print("no CUDA GPU visible to PyTorch: nothing measured", file=sys.stderr)
        return 3
    data = (read_csv(args.data_dir / "imdb" / "train.csv", args.texts), read_csv(args.data_dir / "imdb" / "dev.csv", 1000))
    results = {"gpu": torch.cuda.get_device_name(0), "texts": args.texts, "epochs": args.epochs, "runs": {}}
    runs = [("cpu", "float32")] + ([("cpu", "bfloat16")] if native_bf16() else []) + [
        ("cuda", "float32"), ("cuda", "bfloat16"), ("cuda", "float16")]
    for name, config in CONFIGS.items():
        results["runs"][name] = [one(device, precision, config, data, args.epochs) for device, precision in runs]
        print(json.dumps(results["runs"][name], indent=1), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
