"""Distillation recipe variants (issue 11), compared on dev (seed 0), built from textcnn.distill's own parts.

    python benchmarks/distill_dev.py --dataset mr --variants plain plain_tv d10_tv d10r d10r_tv

One ``--encoder minilm-l6`` teacher (seed 0) is trained on the data set (kept in ``--work``, reused),
labels the train set plus augmented copies once per transfer set (cached), and each variant's student
(textcnn's defaults otherwise) trains on those soft targets:

* ``plain``: the labels alone; ``plain_tv``: the same, starting from the teacher's static vectors;
* ``d10``: 10 augmented copies (word dropout, n-gram sampling); ``d10r``: also word replacement by
  nearest words in the teacher's static vectors (``textcnn.distill.teacher_words``);
* ``_tv``: the student starts from those vectors. ``d10r_tv`` is what ``textcnn.distill`` does.

One line per variant is appended to ``results/distill-dev.jsonl`` (dev and test accuracy; the choice is
made on dev). ``OMP_NUM_THREADS=1`` leaves a core to other work.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import textcnn
from textcnn import TextCNNClassifier
from textcnn.distill import DEFAULT_COPIES, augment, mixed_targets, teacher_words, write_vectors
from textcnn.tokenizers import make_tokenizer

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "distill-dev.jsonl"
ALPHA = 0.5  # the teacher's share of the target on the labelled texts, as textcnn distill's default
VARIANTS = ("plain", "plain_tv", "d10", "d10_tv", "d10r", "d10r_tv")


def read(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


class Bench:
    def __init__(self, data_dir: Path, work: Path) -> None:
        self.train, self.dev, self.test = (read(data_dir / f"{s}.csv") for s in ("train", "dev", "test"))
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "teacher" / "config.json").exists():
            TextCNNClassifier(encoder="minilm-l6", seed=0, verbose=0, device="cpu").fit(
                *self.train, validation_data=self.dev).save(work / "teacher")
        self.teacher = textcnn.load(work / "teacher")
        self.found = teacher_words(self.teacher, self.train[0], make_tokenizer("word").tokenize)

    def targets(self, replace: bool) -> tuple[list[str], np.ndarray]:
        """The train texts plus DEFAULT_COPIES augmented copies, and the teacher's logits (cached on disk)."""
        cache = self.work / f"transfer{'-replace' if replace else ''}.npz"
        if cache.exists():
            z = np.load(cache, allow_pickle=False)
            return json.loads(str(z["texts"])), z["logits"]
        texts = self.train[0] + augment(self.train[0], DEFAULT_COPIES, seed=0,
                                        neighbours=self.found.neighbours if replace else None)
        logits = self.teacher.decision_function(texts)
        np.savez(cache, texts=json.dumps(texts), logits=logits)
        return texts, logits

    def student(self, variant: str, alpha: float = ALPHA, temperature: float = 1.0, extra: dict | None = None) -> dict:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            params = {"embeddings": write_vectors(self.found, tmp)} if variant.endswith("_tv") else {}
            clf = TextCNNClassifier(seed=0, verbose=0, device="cpu", **{**params, **(extra or {})})
            if variant.startswith("plain"):
                clf.fit(*self.train, validation_data=self.dev)
            else:
                texts, logits = self.targets(replace=variant.startswith("d10r"))
                classes = list(self.teacher.classes_)
                proba, guessed = mixed_targets(logits, self.train[1], classes, alpha, temperature)
                clf.fit(texts, self.train[1] + guessed, validation_data=self.dev, soft_targets=(classes, proba))
        return {"variant": variant, "dev": clf.score(*self.dev) * 100, "test": clf.score(*self.test) * 100,
                "best_epoch": clf.best_epoch_, "seconds": round(time.perf_counter() - started)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    p.add_argument("--dataset", default="mr")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "textcnn-distill-dev",
                   help="the teacher and the cached transfer sets")
    p.add_argument("--alpha", type=float, default=ALPHA, help="the teacher's share of the labelled texts' targets")
    p.add_argument("--temperature", type=float, default=1.0, help="softens the teacher's probabilities")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON", help="a student setting, e.g. feature_size=200")
    args = p.parse_args()
    extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    bench = Bench(args.data_dir / args.dataset, args.work / args.dataset)
    for variant in args.variants:
        row = {"dataset": args.dataset, "seed": 0, **bench.student(variant, args.alpha, args.temperature, extra),
               "alpha": args.alpha, "T": args.temperature, "params": extra}
        print(json.dumps(row), flush=True)
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
