"""Reference: TF-IDF + LogReg with uni- to bigrams (the accuracy table's peer) and with trigrams too.

The accuracy table's TF-IDF peer uses 1-2grams on every data set; this checks whether trigrams would
lift it where textcnn's n-gram channel uses them (characters, THUCNews). The same tokens, vectorizer
settings and C grid (chosen on dev) as ``benchmarks/accuracy.py``; deterministic, so one fit each.

    python benchmarks/tfidf_order.py --data-dir ../shared/datasets --datasets thucnews
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from accuracy import LOGREG_CS, fit_logreg, load_dataset, logreg_targets

HERE = Path(__file__).resolve().parent


def ngrams(tokens: list[str], n: int) -> list[str]:
    """The tokens' 1..n-grams, as accuracy.py's analyzer builds uni- and bigrams."""
    return [" ".join(tokens[i : i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1)]


def run(data_dir: Path, name: str, n: int) -> dict:
    data = load_dataset(data_dir / name, False)
    vec = TfidfVectorizer(analyzer=lambda tokens: ngrams(tokens, n), sublinear_tf=True)
    x_train, x_dev, x_test = (vec.fit_transform(data.train.tokens), vec.transform(data.dev.tokens),
                              vec.transform(data.test.tokens))
    classes, y_train = logreg_targets(data.train, False)
    model, names, c, seconds = fit_logreg(x_train, y_train, x_dev, data.dev, classes, False, 0, LOGREG_CS)
    names = np.array(names)
    accuracy = {split: round(100 * float(np.mean(names[model.predict_proba(x).argmax(1)] == np.array(s.labels))), 2)
                for split, x, s in (("dev", x_dev, data.dev), ("test", x_test, data.test))}
    return {"dataset": name, "ngram_range": [1, n], "C": c, "features": x_train.shape[1], **accuracy}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    p.add_argument("--datasets", nargs="+", default=["thucnews"])
    p.add_argument("--json", type=Path, default=HERE / "results" / "tfidf-order.json")
    args = p.parse_args(argv)
    rows = []
    for name in args.datasets:
        for n in (2, 3):
            rows.append(run(args.data_dir, name, n))
            print(json.dumps(rows[-1]), flush=True)
    args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
