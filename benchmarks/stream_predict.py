"""Streaming prediction of a big CSV: peak memory (max RSS) of ``textcnn predict --input --output``.

Generates a seeded CSV of ``--rows`` rows (id, text, source) in a temporary directory (not kept),
trains a small model on a seeded labelled sample (or uses ``--model-dir``), runs
``textcnn predict MODEL --input big.csv --output out.csv`` as a subprocess and polls its peak RSS
(``VmHWM`` in ``/proc/PID/status``; not ``getrusage(RUSAGE_CHILDREN)``, whose ``ru_maxrss`` also counts
the parent's memory that the child held between fork and exec). Then checks that the output holds every row, in input
order, with the input columns passed through. Issue 14's bar: under 800 MB for 1,000,000 rows.

Run it alone (``flock /work/heavy.lock``): the time and texts/s are worthless beside other jobs;
the peak RSS is not.

Example:
    python benchmarks/stream_predict.py --rows 1000000 --json benchmarks/results/stream-predict.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RSS_LIMIT_MB = 800
MODEL = "trained here on 4,000 generated texts: embedding 64, 64 filters, windows 3,4,5, max_text_len 64, 2 epochs"
WORDS = [f"w{i}" for i in range(5000)]
POSITIVE, NEGATIVE = ["good", "great", "superb", "lovely", "fun"], ["bad", "awful", "dull", "poor", "boring"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the generated CSV [1000000]")
    p.add_argument("--chunk-size", type=int, default=10_000, help="textcnn predict --chunk-size [10000]")
    p.add_argument("--model-dir", help="a saved model to use (default: train a small one on generated texts)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated texts [0]")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    return p.parse_args()


def sentence(rng: random.Random) -> tuple[str, str]:
    """A text of 5-60 words with one sentiment word, and its label."""
    label = rng.choice(("pos", "neg"))
    words = rng.choices(WORDS, k=rng.randint(5, 60))
    words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
    return " ".join(words), label


def write_big_csv(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "source"])
        for i in range(rows):
            w.writerow([i, sentence(rng)[0], f"batch-{i // 1000}"])


def train_model(out: Path, seed: int) -> None:
    from textcnn import TextCNNClassifier

    rng = random.Random(seed + 1)
    texts, labels = zip(*(sentence(rng) for _ in range(4000)))
    clf = TextCNNClassifier(embedding_size=64, feature_size=64, epochs=2, max_text_len=64, verbose=0)
    clf.fit(list(texts), list(labels)).save(out)


def run_and_watch(command: list[str], every_s: float = 0.05) -> float:
    """Runs ``command``; returns its peak resident memory in MB (the last VmHWM read before it exits)."""
    proc = subprocess.Popen(command)
    status, peak_kb = Path(f"/proc/{proc.pid}/status"), 0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):  # high-water mark of the process's own (post-exec) memory
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(every_s)
    if proc.wait() != 0:
        raise SystemExit(f"textcnn predict failed with exit status {proc.returncode}")
    return peak_kb / 1024


def check_output(path: Path, rows: int) -> None:
    """Every row, in input order, its columns passed through and a prediction after them."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        assert header[:3] == ["id", "text", "source"] and header[3:5] == ["label", "probability"], header
        n = 0
        for n, row in enumerate(reader):
            assert int(row[0]) == n, f"row {n + 2} holds id {row[0]}: out of order"
            assert row[3] in ("pos", "neg") and 0.0 <= float(row[4]) <= 1.0, row
        assert n + 1 == rows, f"{n + 1} output rows for {rows} input rows"


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="stream-predict-") as tmp:
        tmp = Path(tmp)
        big, out = tmp / "big.csv", tmp / "out.csv"
        started = time.perf_counter()
        write_big_csv(big, args.rows, args.seed)
        print(f"wrote {args.rows} rows ({big.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        model = Path(args.model_dir) if args.model_dir else tmp / "model"
        if not args.model_dir:
            train_model(model, args.seed)
        command = [sys.executable, "-m", "textcnn", "predict", str(model), "--input", str(big), "--output", str(out),
                   "--chunk-size", str(args.chunk_size)]
        started = time.perf_counter()
        peak_mb = run_and_watch(command)
        seconds = time.perf_counter() - started
        check_output(out, args.rows)
        result = {
            "rows": args.rows, "chunk_size": args.chunk_size, "input_mb": round(big.stat().st_size / 1e6, 1),
            "seconds": round(seconds, 1), "texts_per_s": round(args.rows / seconds), "peak_rss_mb": round(peak_mb),
            "rss_limit_mb": RSS_LIMIT_MB, "under_limit": peak_mb < RSS_LIMIT_MB, "order_and_count_checked": True,
            "model": args.model_dir and Path(args.model_dir).name or MODEL,
            "command": "textcnn predict MODEL --input big.csv --output out.csv --chunk-size " + str(args.chunk_size),
            "machine": machine(),
        }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0 if result["under_limit"] else 1


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "note": "shared machine: other jobs ran beside this one"}


if __name__ == "__main__":
    sys.exit(main())
