"""Training past memory and past one process (issue 13): out-of-core peak RSS, exact resume, DDP on CPU.

    python benchmarks/scale.py                    # everything, results in benchmarks/results/scale.json
    python benchmarks/scale.py --rows 200000      # a smaller file (the README table uses 1,000,000)
    python benchmarks/scale.py --parts resume ddp

Parts:

* ``out-of-core``: a synthetic CSV of ``--rows`` rows (about 500 bytes each: 1,000,000 rows make
  about 500 MB), generated with a seed in a temporary directory (never committed), and
  ``textcnn train big.csv --dev dev.csv --epochs 1 --max-steps 300`` through the token cache:
  peak RSS (the process's max RSS, from wait4), the encoding throughput, then the same command
  again (a cache hit). Then the in-memory path (``--in-memory``) on the same file, or on its first
  ``--in-memory-rows`` rows when given (said so in the results).
* ``resume``: a run with ``--checkpoint-every 10`` is SIGKILLed once its first checkpoint is on
  disk, resumed with ``--resume``, and its model.safetensors compared byte for byte with an
  uninterrupted run's (CPU, float32).
* ``ddp``: 1 process vs ``torchrun --nproc-per-node 2`` (gloo) on a TREC-sized synthetic set:
  training texts/s (all ranks together) and test accuracy.

Every command runs in its own subprocess. On a shared or 2-core machine the DDP numbers mostly
show the cost of the processes competing for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import trec_like  # noqa: E402 - the DDP data of tests/test_ddp.py
CLASSES = ["billing", "shipping", "quality", "account"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run(cmd: list[str], timeout: float = 3600) -> dict:
    """Runs ``cmd``; its wall time, exit status, max RSS (MB) and stderr."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    return {"seconds": round(time.perf_counter() - started, 1), "rc": proc.returncode,
            "max_rss_mb": round(usage.ru_maxrss / 1024, 1), "stderr": text}


def textcnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "textcnn", *args]


DDP_TEXTS = 20_000


def write_corpus(path: Path, rows: int, seed: int, words: int = 30_000) -> None:
    """Support-ticket-like rows: ~80 Zipf-distributed filler words plus a few class cue words."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(words)])
    cues = {c: np.array([f"{c}{i}" for i in range(50)]) for c in CLASSES}
    ranks = np.arange(1, words + 1)
    p = 1 / ranks
    p /= p.sum()
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,label\n")
        for start in range(0, rows, 50_000):
            n = min(50_000, rows - start)
            labels = rng.integers(0, len(CLASSES), n)
            lengths = rng.integers(40, 120, n)
            filler = rng.choice(words, size=(n, 120), p=p)
            cue_idx = rng.integers(0, 50, (n, 3))
            lines = []
            for i in range(n):
                c = CLASSES[labels[i]]
                toks = list(vocab[filler[i, : lengths[i]]])
                for j, pos in enumerate(rng.integers(0, lengths[i], 3)):
                    toks.insert(int(pos), cues[c][cue_idx[i, j]])
                lines.append(f"{' '.join(toks)},{c}\n")
            f.write("".join(lines))


def out_of_core(work: Path, rows: int, in_memory_rows: int | None) -> dict:
    big, dev = work / "big.csv", work / "dev.csv"
    started = time.perf_counter()
    write_corpus(big, rows, seed=1)
    write_corpus(dev, 5_000, seed=2)
    result = {"rows": rows, "file_mb": round(big.stat().st_size / 2**20, 1),
              "generate_seconds": round(time.perf_counter() - started, 1)}
    common = ["--dev", str(dev), "--epochs", "1", "--max-steps", "300", "--precision", "float32", "--device", "cpu"]
    cache = work / "cache"
    cold = run(textcnn("train", str(big), "--out", str(work / "m1"), "--cache-dir", str(cache), *common))
    encoded = re.search(r"encoded (\d+) texts of \S*big.csv into \S+ \((\d+) texts/s", cold["stderr"])
    counted = "counted" in cold["stderr"]
    result["cold"] = {k: cold[k] for k in ("seconds", "rc", "max_rss_mb")}
    result["encoding_texts_per_s"] = int(encoded.group(2)) if encoded else None
    result["counting_pass"] = counted
    warm = run(textcnn("train", str(big), "--out", str(work / "m2"), "--cache-dir", str(cache), *common))
    result["cache_hit"] = {k: warm[k] for k in ("seconds", "rc", "max_rss_mb")}
    result["cache_hit"]["hit_logged"] = warm["stderr"].count("token cache hit")
    result["cache_mb"] = round(sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20, 1)
    source = big
    if in_memory_rows and in_memory_rows < rows:
        source = work / "part.csv"
        with open(big, encoding="utf-8") as f, open(source, "w", encoding="utf-8") as out:
            for i, line in enumerate(f):
                if i > in_memory_rows:
                    break
                out.write(line)
    mem = run(textcnn("train", str(source), "--out", str(work / "m3"), "--in-memory", *common))
    result["in_memory"] = {k: mem[k] for k in ("seconds", "rc", "max_rss_mb")}
    result["in_memory"]["rows"] = in_memory_rows if source != big else rows
    for name in ("cold", "cache_hit", "in_memory"):
        if result[name]["rc"] != 0:
            result[name]["error"] = (cold if name == "cold" else warm if name == "cache_hit" else mem)["stderr"][-2000:]
    return result


def resume(work: Path) -> dict:
    train, dev = work / "r_train.csv", work / "r_dev.csv"
    _write(train, *trec_like(5400, 1))
    _write(dev, *trec_like(500, 2))
    flags = ["--dev", str(dev), "--epochs", "3", "--precision", "float32", "--device", "cpu", "--seed", "7", "-q"]
    plain = run(textcnn("train", str(train), "--out", str(work / "plain"), *flags))
    out, ckpt = work / "killed", work / "killed.checkpoint"
    proc = subprocess.Popen(textcnn("train", str(train), "--out", str(out), *flags, "--checkpoint-every", "10"),
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (ckpt / "checkpoint.json").exists() and proc.poll() is None:
        time.sleep(0.01)  # a script, not a test: polling the file system is fine here
    killed = proc.poll() is None
    step = json.loads((ckpt / "checkpoint.json").read_text())["step"] if killed else None
    if killed:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resumed = run(textcnn("train", str(train), "--out", str(out), *flags, "--resume"))
    same = (out / "model.safetensors").read_bytes() == (work / "plain" / "model.safetensors").read_bytes()
    return {"killed_after_first_checkpoint": killed, "checkpoint_step": step, "plain_rc": plain["rc"],
            "resumed_rc": resumed["rc"], "byte_identical": same}


def _write(path: Path, texts, labels) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))


def ddp(work: Path) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    train, dev = work / "d_train.csv", work / "d_dev.csv"
    _write(train, *trec_like(DDP_TEXTS, 1))
    _write(dev, *trec_like(1000, 2))
    test = trec_like(2000, 3)
    flags = ["--dev", str(dev), "--epochs", "2", "--precision", "float32", "--device", "cpu", "--patience", "5", "-q"]
    out = {}
    for procs in (1, 2):
        model = work / f"ddp{procs}"
        cmd = textcnn("train", str(train), "--out", str(model), *flags) if procs == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
            "-m", "textcnn", "train", str(train), "--out", str(model), *flags]
        r = run(cmd)
        from textcnn import load

        clf = load(model)
        seconds = sum(h["seconds"] for h in clf.history_)
        out[f"{procs}_process"] = {"rc": r["rc"], "wall_seconds": r["seconds"], "train_seconds": round(seconds, 1),
                                   "texts_per_s": round(len(clf.history_) * DDP_TEXTS / seconds),
                                   "test_accuracy": round(clf.score(*test), 4)}
    out["note"] = (f"{os.cpu_count()} CPU cores; torchrun sets OMP_NUM_THREADS=1 per process, the single process "
                   "uses PyTorch's default threads; the 2 ranks share the same cores")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--in-memory-rows", type=int, default=None,
                        help="measure the in-memory path on the first N rows only (default: the whole file)")
    parser.add_argument("--parts", nargs="+", default=["out-of-core", "resume", "ddp"])
    parser.add_argument("--work-dir", help="where the generated files go [a temporary directory, removed after]")
    parser.add_argument("--out", default=str(HERE / "results" / "scale.json"))
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="textcnn-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                           "load_average": os.getloadavg()}, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        if "out-of-core" in args.parts:
            results["out_of_core"] = out_of_core(work, args.rows, args.in_memory_rows)
            results["machine"]["load_average_after_out_of_core"] = os.getloadavg()  # a shared machine: times vary
            print(json.dumps(results["out_of_core"], indent=1), flush=True)
        if "resume" in args.parts:
            results["resume"] = resume(work)
            print(json.dumps(results["resume"], indent=1), flush=True)
        if "ddp" in args.parts:
            results["ddp"] = ddp(work)
            print(json.dumps(results["ddp"], indent=1), flush=True)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    random.seed(0)
    main()
