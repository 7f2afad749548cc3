"""Deployment paths against the PyTorch model: ONNX float32 and int8 (textcnn.runtime) on real test sets.

    python benchmarks/deploy.py [--data-dir ../shared/datasets] [--json benchmarks/results/deploy.json]

For SST-2, TREC and IMDB (all at max_text_len 400), trains textcnn with the speed benchmark's shape
(embedding 256, 100 filters, windows 3-6) for a few epochs, saves it, exports ``model.onnx`` and
``model.int8.onnx``, then runs the same test texts through four paths:

- **torch eager**: the plain float32 model forward (``clf._logits_from_ids(fast=False)``), batches of
  similar length;
- **textcnn fast**: ``clf.predict_proba``, textcnn's fastest exact path (tables, fused kernel);
- **onnx fp32** / **onnx int8**: ``textcnn.runtime.load(model_dir[, int8=True]).predict_proba``.

Per path: accuracy, agreement with torch eager (share of identical labels, largest probability
difference), model file size, the size of the environment it needs (MB of installed distributions:
textcnn[train] against textcnn[runtime], resolved from this environment's package metadata), cold
start (a fresh process from its start to its first prediction, median of 3 after a warm-up run),
end-to-end texts/s over the test set (tokenizing included), single-text p50/p99.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import textwrap
import time
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from speed import SHAPE, latencies, machine, median_time, read_csv  # noqa: E402

# data set -> (training texts, test texts); None: all of them
DATASETS = {"sst2": (None, None), "trec": (None, None), "imdb": (6000, 5000)}
MAX_TEXT_LEN = 400
PATHS = ("torch eager", "textcnn fast", "onnx fp32", "onnx int8")
SINGLE_TEXTS = 300
EVERYTHING = 10**9

# What a fresh process runs to its first prediction, per path ({model} and {text} filled in).
COLD = {
    "torch eager": "import textcnn; c = textcnn.load({model!r}); c._logits_from_ids(c.encode([{text!r}]), fast=False)",
    "textcnn fast": "import textcnn; textcnn.load({model!r}).predict_proba([{text!r}])",
    "onnx fp32": "import textcnn.runtime; textcnn.runtime.load({model!r}).predict_proba([{text!r}])",
    "onnx int8": "import textcnn.runtime; textcnn.runtime.load({model!r}, int8=True).predict_proba([{text!r}])",
}


def train_and_export(name: str, data_dir: Path, out_dir: Path, epochs: int,
                     limit: int = EVERYTHING) -> tuple[Path, list[str], list[str]]:
    from textcnn import TextCNNClassifier
    from textcnn.export import export_onnx

    n_train, n_test = DATASETS[name]
    train = read_csv(data_dir / name / "train.csv", min(n_train or EVERYTHING, limit))
    dev = read_csv(data_dir / name / "dev.csv", min(EVERYTHING, limit))
    test_x, test_y = read_csv(data_dir / name / "test.csv", min(n_test or EVERYTHING, limit))
    model_dir = out_dir / name
    started = time.perf_counter()
    clf = TextCNNClassifier(**SHAPE, max_text_len=MAX_TEXT_LEN, epochs=epochs, seed=0, verbose=0)
    clf.fit(*train, validation_data=dev).save(model_dir)
    print(f"{name}: trained on {len(train[0])} texts in {time.perf_counter() - started:.0f} s", flush=True)
    export_onnx(model_dir)
    export_onnx(model_dir, int8=True)
    return model_dir, test_x, test_y


def predictors(model_dir: Path) -> dict:
    import textcnn
    import textcnn.runtime
    from textcnn.predictions import softmax

    clf = textcnn.load(model_dir)
    fp32, int8 = textcnn.runtime.load(model_dir), textcnn.runtime.load(model_dir, int8=True)
    return {
        "torch eager": lambda texts: softmax(clf._logits_from_ids(clf.encode(texts), fast=False).numpy()),
        "textcnn fast": clf.predict_proba,
        "onnx fp32": fp32.predict_proba,
        "onnx int8": int8.predict_proba,
    }, clf.classes_


def measure(name: str, model_dir: Path, test_x: list[str], test_y: list[str]) -> dict:
    paths, classes = predictors(model_dir)
    gold = np.asarray(test_y, dtype=object)
    probas = {path: fn(test_x) for path, fn in paths.items()}
    reference = probas["torch eager"]
    files = {"torch eager": "model.safetensors", "textcnn fast": "model.safetensors",
             "onnx fp32": "model.onnx", "onnx int8": "model.int8.onnx"}
    rows = {}
    for path, fn in paths.items():
        p = probas[path]
        rows[path] = {
            "accuracy": float((classes[p.argmax(1)] == gold).mean()),
            "same_label": float((p.argmax(1) == reference.argmax(1)).mean()),
            "max_prob_diff": float(np.abs(p - reference).max()),
            "model_mb": (model_dir / files[path]).stat().st_size / 1e6,
            "texts_per_s": len(test_x) / median_time(lambda: fn(test_x), 1),
            **latencies(lambda t: fn([t]), test_x[:SINGLE_TEXTS]),
            "cold_start_s": cold_start(COLD[path].format(model=str(model_dir), text=test_x[0])),
        }
        print(f"{name} {path}: {rows[path]}", flush=True)
    return {"test_texts": len(test_x), "paths": rows}


def cold_start(code: str, repeats: int = 3) -> float:
    """Median seconds from a fresh process's start to its first prediction, after one warm-up run."""
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    times = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
        if i:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def environment_mb(extra: str) -> dict:
    """MB on disk of textcnn[extra] with everything it pulls in, from the installed distributions' file lists."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [*project["dependencies"], *project["optional-dependencies"][extra]]
    seen: dict[str, float] = {}
    while todo:
        name = re.split(r"[\s\[<>=!~;]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        dist = metadata.distribution(name)
        seen[name] = sum(f.size or 0 for f in dist.files or []) / 1e6
        for req in dist.requires or []:
            if "extra ==" not in req and _applies(req):
                todo.append(req)
    package = sum(f.stat().st_size for f in (ROOT / "src" / "textcnn").rglob("*") if f.is_file()) / 1e6
    return {"mb": round(sum(seen.values()) + package, 1), "distributions": {k: round(v, 1) for k, v in sorted(seen.items())}}


def _applies(req: str) -> bool:
    from packaging.requirements import Requirement

    marker = Requirement(req).marker
    return marker is None or marker.evaluate()


def checks(results: dict, envs: dict) -> dict:
    fp32 = {n: results[n]["paths"]["onnx fp32"] for n in ("sst2", "trec")}
    out = {
        "fp32 identical labels on sst2 and trec": all(r["same_label"] == 1.0 for r in fp32.values()),
        "fp32 max prob diff < 1e-4 on sst2 and trec": all(r["max_prob_diff"] < 1e-4 for r in fp32.values()),
    }
    for name, r in results.items():
        a, b = r["paths"]["onnx fp32"], r["paths"]["onnx int8"]
        out[f"{name}: int8 accuracy within 1.0 point of fp32"] = abs(a["accuracy"] - b["accuracy"]) <= 0.01
        out[f"{name}: int8 file <= 35% of fp32"] = b["model_mb"] <= 0.35 * a["model_mb"]
        torch_start = min(r["paths"][path]["cold_start_s"] for path in ("torch eager", "textcnn fast"))
        out[f"{name}: runtime cold start >= 3x faster"] = torch_start >= 3 * a["cold_start_s"]
    out["runtime env <= 1/4 of the torch env"] = envs["runtime"]["mb"] <= envs["train"]["mb"] / 4
    return out


def markdown(results: dict, envs: dict) -> str:
    lines = ["| data | path | accuracy | same label | max prob diff | model MB | env MB | cold start s | "
             "texts/s | p50 ms | p99 ms |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        for path, row in r["paths"].items():
            env = envs["runtime" if path.startswith("onnx") else "train"]["mb"]
            lines.append(f"| {name} ({r['test_texts']}) | {path} | {row['accuracy']:.2%} | {row['same_label']:.2%} | "
                         f"{row['max_prob_diff']:.1e} | {row['model_mb']:.1f} | {env:.0f} | {row['cold_start_s']:.2f} | "
                         f"{row['texts_per_s']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    p.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "deploy", help="where the models are saved")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--json", type=Path, default=HERE / "results" / "deploy.json")
    p.add_argument("--limit", type=int, default=EVERYTHING, help="at most this many texts per split (a quick try)")
    args = p.parse_args(argv)
    envs = {extra: environment_mb(extra) for extra in ("train", "runtime")}
    print(f"environments: textcnn[train] {envs['train']['mb']} MB, textcnn[runtime] {envs['runtime']['mb']} MB", flush=True)
    results = {}
    for name in DATASETS:
        model_dir, test_x, test_y = train_and_export(name, args.data_dir, args.out_dir, args.epochs, args.limit)
        results[name] = measure(name, model_dir, test_x, test_y)
    report = {"machine": machine(), "command": "python benchmarks/deploy.py " + " ".join(argv or sys.argv[1:]),
              "epochs": args.epochs, "max_text_len": MAX_TEXT_LEN, "shape": {k: list(v) if isinstance(v, tuple) else v
                                                                               for k, v in SHAPE.items()},
              "datasets": {n: {"train_texts": t or "all", "test_texts": s or "all"} for n, (t, s) in DATASETS.items()},
              "environments": envs, "results": results, "checks": checks(results, envs)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(results, envs))
    print(json.dumps(report["checks"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
