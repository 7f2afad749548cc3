"""Accuracy of textcnn against fastText and TF-IDF + logistic regression on the shared data sets.

    python benchmarks/accuracy.py --data-dir ../shared/datasets [--datasets mr sst2 ...] [--seeds 3]

For each data set (``train.csv`` / ``dev.csv`` / ``test.csv``, ``text,label``) and each seed it runs:

* textcnn, random initialisation, library defaults (plus the per-data-set caps in ``SPECS``);
* textcnn with pretrained vectors (``glove-6b-50d`` for English, the Tencent character vectors for THUCNews);
* fastText supervised (PyPI ``fasttext-numpy2``): bigrams, lr chosen on dev from ``FASTTEXT_LRS``;
* TF-IDF 1-2 grams + LogisticRegression (scikit-learn): C chosen on dev from ``LOGREG_CS``.

Every system sees the same tokens (textcnn's own tokenizer: words, or characters for Chinese).
Single-label sets report test accuracy (%); the multi-label set (goemotions) reports test macro-F1 with
per-label thresholds tuned on dev for all three systems. Nothing is tuned on test.

Results go to ``benchmarks/results/accuracy.json`` (merged, so data sets can be run one at a time) and
the table in ``benchmarks/README.md`` between the ``accuracy-table`` markers is rewritten from it.
Needs ``pip install -e '.[bench]'``. Run heavy work under ``flock /work/heavy.lock`` on shared machines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textcnn import TextCNNClassifier, read_records
from textcnn.metrics import best_thresholds, multilabel_report
from textcnn.tokenizers import make_tokenizer, resolve_tokenizer_name

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "accuracy.json"
README = HERE / "README.md"
FASTTEXT_LRS = (0.05, 0.1, 0.25, 0.5, 1.0)
LOGREG_CS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
SYSTEMS = ("fasttext", "tfidf_logreg", "textcnn_rand", "textcnn_vectors")


@dataclass
class Spec:
    vectors: str  # a registered name, or a path relative to --data-dir
    multi_label: bool = False
    textcnn: dict = field(default_factory=dict)  # per-data-set caps, reported in the table


SPECS = {
    "mr": Spec("glove-6b-50d"),
    "sst2": Spec("glove-6b-50d"),
    "trec": Spec("glove-6b-50d"),
    "thucnews": Spec("thucnews/embedding_Tencent.npz"),
    # Full reviews average 230 tokens; capped to fit the 90-minute budget on a 2-core CPU.
    "imdb": Spec("glove-6b-50d", textcnn={"max_text_len": 400, "epochs": 4, "patience": 1}),
    "goemotions": Spec("glove-6b-50d", multi_label=True),
}


@dataclass
class Split:
    texts: list[str]
    labels: list  # str, or a list of str (multi-label)
    tokens: list[list[str]]


def load_split(path: Path, multi: bool, tokenizer) -> Split:
    rec = read_records(path)
    labels = [y.split("|") if multi and isinstance(y, str) else y for y in rec.labels]
    return Split(rec.texts, labels, [tokenizer.tokenize(t) for t in rec.texts])


def load_dataset(root: Path, multi: bool) -> tuple[Split, Split, Split]:
    probe = read_records(root / "train.csv").texts
    name, _ = resolve_tokenizer_name("auto", probe)
    tok = make_tokenizer(name, lowercase=True)
    return tuple(load_split(root / f"{part}.csv", multi, tok) for part in ("train", "dev", "test"))


# ----- scoring -----

def label_matrix(labels: list, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), dtype=bool)
    for r, row in enumerate(labels):
        out[r, [index[c] for c in row if c in index]] = True
    return out


def score_single(classes: list[str], proba: np.ndarray, labels: list) -> float:
    pred = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    return float(np.mean(pred == np.asarray(labels, dtype=object))) * 100


def score_multi(classes, dev_proba, dev_labels, test_proba, test_labels) -> float:
    """Test macro-F1 with per-label thresholds tuned on dev."""
    thresholds = best_thresholds(label_matrix(dev_labels, classes), dev_proba)
    return multilabel_report(label_matrix(test_labels, classes), test_proba >= thresholds, classes)["macro_f1"]


def dev_score(classes, proba, labels, multi: bool) -> float:
    if multi:
        return score_multi(classes, proba, labels, proba, labels)
    return score_single(classes, proba, labels)


# ----- peers -----

def run_tfidf(train: Split, dev: Split, test: Split, multi: bool, seed: int) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    vec = TfidfVectorizer(analyzer=lambda tokens: tokens + [a + " " + b for a, b in zip(tokens, tokens[1:])],
                          sublinear_tf=True)
    x_train, x_dev, x_test = vec.fit_transform(train.tokens), vec.transform(dev.tokens), vec.transform(test.tokens)
    classes = sorted({c for y in train.labels for c in (y if multi else [y])})
    y_train = label_matrix(train.labels, classes).astype(int) if multi else train.labels
    best = None
    for c in LOGREG_CS:
        # liblinear for the binary one-vs-rest problems; lbfgs (multinomial) for single-label
        base = LogisticRegression(C=c, solver="liblinear" if multi else "lbfgs", max_iter=1000, random_state=seed)
        model = OneVsRestClassifier(base) if multi else base
        started = time.perf_counter()
        model.fit(x_train, y_train)
        seconds = time.perf_counter() - started
        score = dev_score(list(model.classes_) if not multi else classes, model.predict_proba(x_dev), dev.labels, multi)
        if best is None or score > best[0]:
            best = (score, c, model, seconds)
    score, c, model, seconds = best
    names = classes if multi else list(model.classes_)
    return {"test": _test_score(names, model.predict_proba(x_dev), model.predict_proba(x_test), dev, test, multi),
            "dev": score, "seconds": seconds, "chosen": {"C": c}}


def _test_score(classes, dev_proba, test_proba, dev: Split, test: Split, multi: bool) -> float:
    if multi:
        return score_multi(classes, dev_proba, dev.labels, test_proba, test.labels)
    return score_single(classes, test_proba, test.labels)


def run_fasttext(train: Split, dev: Split, test: Split, multi: bool, seed: int) -> dict:
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None  # its deprecation chatter
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        with open(path, "w", encoding="utf-8") as f:
            for tokens, y in zip(train.tokens, train.labels):
                f.write(" ".join(f"__label__{c}" for c in (y if multi else [y])) + " " + " ".join(tokens) + "\n")
        best = None
        for lr in FASTTEXT_LRS:
            started = time.perf_counter()
            model = fasttext.train_supervised(input=str(path), lr=lr, wordNgrams=2, epoch=5, thread=1, seed=seed,
                                              loss="ova" if multi else "softmax", verbose=0)
            seconds = time.perf_counter() - started
            classes = [c[len("__label__"):] for c in model.labels]
            score = dev_score(classes, _ft_proba(model, dev.tokens), dev.labels, multi)
            if best is None or score > best[0]:
                best = (score, lr, model, seconds, classes)
    score, lr, model, seconds, classes = best
    test_score = _test_score(classes, _ft_proba(model, dev.tokens), _ft_proba(model, test.tokens), dev, test, multi)
    return {"test": test_score, "dev": score, "seconds": seconds, "chosen": {"lr": lr}}


def _ft_proba(model, token_lists: list[list[str]]) -> np.ndarray:
    index = {c: i for i, c in enumerate(model.labels)}
    labels, probs = model.predict([" ".join(t) for t in token_lists], k=-1, threshold=0.0)
    out = np.zeros((len(token_lists), len(index)))
    for r, (ls, ps) in enumerate(zip(labels, probs)):
        out[r, [index[c] for c in ls]] = ps
    return out


# ----- textcnn -----

def run_textcnn(train: Split, dev: Split, test: Split, multi: bool, seed: int, params: dict) -> dict:
    clf = TextCNNClassifier(seed=seed, verbose=0, device="cpu", multi_label=multi or None, **params)
    started = time.perf_counter()
    clf.fit(train.texts, train.labels, validation_data=(dev.texts, dev.labels))
    seconds = time.perf_counter() - started
    classes = [str(c) for c in clf.classes_]
    dev_proba, test_proba = clf.predict_proba(dev.texts), clf.predict_proba(test.texts)
    return {"test": _test_score(classes, dev_proba, test_proba, dev, test, multi),
            "dev": dev_score(classes, dev_proba, dev.labels, multi), "seconds": seconds,
            "chosen": {"best_epoch": clf.best_epoch_}, "config": clf.config_.to_dict()}


def run_system(system: str, name: str, data, seed: int, data_dir: Path, overrides: dict) -> dict:
    spec = SPECS[name]
    train, dev, test = data
    if system == "fasttext":
        return run_fasttext(train, dev, test, spec.multi_label, seed)
    if system == "tfidf_logreg":
        return run_tfidf(train, dev, test, spec.multi_label, seed)
    params = {**spec.textcnn, **overrides}
    if system == "textcnn_vectors":
        vectors = spec.vectors
        params["embeddings"] = vectors if "/" not in vectors else str(data_dir / vectors)
    return run_textcnn(train, dev, test, spec.multi_label, seed, params)


# ----- the table -----

def summarise(runs: list[dict]) -> dict:
    tests = [r["test"] for r in runs]
    return {"mean": statistics.fmean(tests), "std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "seconds": statistics.fmean(r["seconds"] for r in runs), "n": len(runs)}


def fmt(name: str, s: dict | None) -> str:
    if s is None:
        return "-"
    if SPECS[name].multi_label:
        return f"{s['mean']:.3f} ± {s['std']:.3f} ({s['seconds']:.0f}s)"
    return f"{s['mean']:.1f} ± {s['std']:.1f} ({s['seconds']:.0f}s)"


def render_table(results: dict) -> str:
    head = ("| dataset | fastText (bigrams, lr tuned on dev) | TF-IDF 1-2gram + LogReg (C tuned on dev) "
            "| textcnn (random init) | textcnn + pretrained vectors |")
    lines = [head, "|---|---|---|---|---|"]
    for name in SPECS:
        if name not in results:
            continue
        cells = [fmt(name, summarise(results[name][s]) if results[name].get(s) else None) for s in SYSTEMS]
        label = f"{name} (macro-F1)" if SPECS[name].multi_label else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    seeds = sorted({len(v) for r in results.values() for v in r.values()})
    sets = sorted({json.dumps(run.get("overrides", {}), sort_keys=True) for r in results.values()
                   for system, runs in r.items() if system.startswith("textcnn") for run in runs})
    lines.append("")
    lines.append(f"Test accuracy % (goemotions: macro-F1), mean ± std over {'/'.join(map(str, seeds))} seeds, "
                 "(mean train seconds of the chosen model). Vectors: glove-6b-50d (English), Tencent "
                 "characters (thucnews). Caps: " + "; ".join(f"{n} {s.textcnn}" for n, s in SPECS.items() if s.textcnn)
                 + ". textcnn overrides (--set): " + ", ".join(sets) + ".")
    return "\n".join(lines)


def write_readme(table: str, readme: Path) -> None:
    start, end = "<!-- accuracy-table:start -->", "<!-- accuracy-table:end -->"
    text = readme.read_text(encoding="utf-8") if readme.exists() else "# Benchmarks\n"
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n## Accuracy\n\n{block}\n"
    _atomic_write(readme, text)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    parser.add_argument("--datasets", nargs="+", default=list(SPECS), choices=list(SPECS))
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON of all runs, merged across calls")
    parser.add_argument("--readme", type=Path, default=README, help="file whose accuracy table is rewritten")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help="override a textcnn default, e.g. --set learning_rate=0.003 (recorded with the runs)")
    parser.add_argument("--table-only", action="store_true", help="only rewrite the README table from --results")
    args = parser.parse_args(argv)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    for name in [] if args.table_only else args.datasets:
        data = load_dataset(args.data_dir / name, SPECS[name].multi_label)
        for system in args.systems:
            runs = []
            for seed in range(args.seeds):
                if system == "tfidf_logreg" and runs:  # deterministic: one fit stands for every seed
                    runs.append(dict(runs[0]))
                    continue
                run = run_system(system, name, data, seed, args.data_dir, overrides)
                run["overrides"] = overrides if system.startswith("textcnn") else {}
                runs.append(run)
                print(f"{name:10s} {system:16s} seed {seed}: test {run['test']:.4f} dev {run['dev']:.4f} "
                      f"{run['seconds']:.1f}s {run['chosen']}", flush=True)
            results.setdefault(name, {})[system] = runs
            _atomic_write(args.results, json.dumps(results, indent=1))
            write_readme(render_table(results), args.readme)
    write_readme(render_table(results), args.readme)
    print(render_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
