"""``make demo``'s data set, BBC News: textcnn's defaults against TF-IDF + LogReg on several splits.

The demo scores one stratified 80/10/10 split (seed 0, 223 test articles: one article is 0.45 points).
This script repeats that split for ``--splits`` seeds and trains, on each, textcnn with its defaults
(model seed 0, as the demo does) and TF-IDF 1-2grams + LogisticRegression with C chosen on dev, and
prints dev and test accuracy per split and the mean. Nothing is chosen on test.

    python benchmarks/bbc_demo.py --splits 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from textcnn import TextCNNClassifier
from textcnn.datasets import bbc_news
from textcnn.demo import split_80_10_10

RESULTS = Path(__file__).resolve().parent / "results" / "bbc-demo.json"
LOGREG_CS = (1.0, 3.0, 10.0, 30.0, 100.0)


def tfidf_logreg(train, dev, test) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x_train, x_dev, x_test = vec.fit_transform(train[0]), vec.transform(dev[0]), vec.transform(test[0])
    fits = [(LogisticRegression(C=c, max_iter=2000).fit(x_train, train[1]), c) for c in LOGREG_CS]
    model, c = max(fits, key=lambda f: f[0].score(x_dev, dev[1]))  # the first best C on dev
    return {"dev": model.score(x_dev, dev[1]), "test": model.score(x_test, test[1]), "C": c}


def textcnn(train, dev, test) -> dict:
    started = time.perf_counter()
    clf = TextCNNClassifier(seed=0, verbose=0).fit(*train, validation_data=dev)
    return {"dev": clf.evaluate(*dev)["accuracy"], "test": clf.evaluate(*test)["accuracy"],
            "best_epoch": clf.best_epoch_, "seconds": time.perf_counter() - started}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args()
    texts, labels = bbc_news()
    runs = []
    for split in args.splits:
        train, dev, test = split_80_10_10(texts, labels, split)
        run = {"split": split, "test_n": len(test[0]), "textcnn": textcnn(train, dev, test),
               "tfidf_logreg": tfidf_logreg(train, dev, test)}
        runs.append(run)
        print(json.dumps(run), flush=True)
    summary = {name: {part: statistics.fmean(r[name][part] for r in runs) for part in ("dev", "test")}
               for name in ("textcnn", "tfidf_logreg")}
    summary["test_ratio"] = summary["textcnn"]["test"] / summary["tfidf_logreg"]["test"]
    print(json.dumps(summary))
    args.results.write_text(json.dumps({"runs": runs, "mean": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
