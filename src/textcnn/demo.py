"""``make demo``: the main job end to end on BBC News (2,225 articles, 5 topics).

Stratified 80/10/10 split with a fixed seed, training with progress, the test report, the model
summary, three new sentences predicted by the reloaded model, and the model saved under runs/.
Run it with ``python -m textcnn.demo [--out runs/bbc-news]``.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import TextCNNClassifier, load
from .cli import format_report
from .data import stratified_split
from .datasets import bbc_news
from .errors import TextCNNError
from .summary import render_summary

NEW_SENTENCES = [
    "The striker scored twice as the champions won the cup final at Wembley.",
    "Shares fell sharply after the bank reported weaker profits and rising debts.",
    "The new smartphone software lets users stream video over broadband networks.",
]


def split_80_10_10(texts: list[str], labels: list[str], seed: int):
    rest, test = stratified_split(labels, 0.10, seed)
    rest_labels = [labels[i] for i in rest]
    train_pos, dev_pos = stratified_split(rest_labels, 1 / 9, seed)  # 10% of the whole
    pick = lambda idx: ([texts[i] for i in idx], [labels[i] for i in idx])  # noqa: E731
    return pick([rest[i] for i in train_pos]), pick([rest[i] for i in dev_pos]), pick(test)


def run(out: str, seed: int) -> float:
    started = time.perf_counter()
    texts, labels = bbc_news()
    (x_train, y_train), (x_dev, y_dev), (x_test, y_test) = split_80_10_10(texts, labels, seed)
    print(f"BBC News: {len(texts)} articles, topics {', '.join(sorted(set(labels)))}")
    print(f"split (stratified, seed {seed}): train {len(x_train)}, dev {len(x_dev)}, test {len(x_test)}\n")
    clf = TextCNNClassifier(seed=seed)
    clf.fit(x_train, y_train, validation_data=(x_dev, y_dev))
    report = clf.evaluate(x_test, y_test)
    print("\ntest report\n" + format_report(report) + "\n")
    print(render_summary(clf.model_, batch_size=32, text_len=clf.config_.max_text_len) + "\n")
    clf.save(out)
    reloaded = load(out)
    print(f"saved the model to {out}; predictions of the reloaded model:")
    for rec in reloaded.predict_records(NEW_SENTENCES):
        print(f"  {rec['label']:<14}{rec['probability']:.3f}  {rec['text']}")
    print(f"\nfinished in {time.perf_counter() - started:.0f}s")
    print(f"test accuracy: {report['accuracy']:.4f}")
    return report["accuracy"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m textcnn.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bbc-news", help="model directory to write [runs/bbc-news]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        run(args.out, args.seed)
    except TextCNNError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
