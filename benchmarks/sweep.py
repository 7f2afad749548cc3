"""Dev-set sweep of textcnn settings: many configurations x data sets x seeds, in parallel processes.

    python benchmarks/sweep.py --data-dir ../shared/datasets --datasets mr sst2 trec --seeds 3 \
        --vectors glove-6b-50d --workers 2 --device cpu --out /tmp/sweep.jsonl [--configs r.base g.base ...]
    python benchmarks/sweep.py --summary benchmarks/results/sweep-dev.jsonl     # the table of a finished sweep

Each configuration in ``CONFIGS`` is a set of ``TextCNNClassifier`` overrides; the value ``"VECTORS"``
stands for ``--vectors`` (a registered name or a ``.npy`` file with its ``STEM.vocab.txt``). Every run
trains on ``train.csv`` with early stopping on ``dev.csv`` and writes one JSON line: the configuration,
data set, seed, dev accuracy (the number to decide on) and test accuracy (for information only; never
choose on it), best epoch and seconds. Jobs run seed by seed, so a run cut short still covers every
configuration with its first seeds. ``--limit N`` keeps the first N texts of each split (a smoke test).

The ``ptb`` tokenizer registered here splits English clitics as the Penn Treebank and GloVe do
(``it's`` -> ``it 's``, ``don't`` -> ``do n't``); the library's ``word`` tokenizer keeps them whole.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import sys
import time
import traceback
from pathlib import Path

PTB = re.compile(
    r"\w+(?=n['\u2019]t\b)|n['\u2019]t\b|['\u2019](?:s|re|ve|d|ll|m)\b"
    r"|\w+(?:(?:-|['\u2019](?!(?:s|re|ve|d|ll|m)\b))\w+)*|[^\w\s]",
    re.IGNORECASE,
)

G = "VECTORS"
CONFIGS: dict[str, dict] = {
    # random initialisation
    "r.base": {},
    "r.e300": {"embedding_size": 300},
    "r.ptb": {"tokenizer": "ptb"},
    "r.elr0.3": {"embedding_lr_scale": 0.3},
    "r.f200": {"feature_size": 200},
    "r.w2345": {"window_sizes": (2, 3, 4, 5)},
    "r.ep20p5": {"epochs": 20, "patience": 5},
    "r.lr1e-3.ep20": {"learning_rate": 1e-3, "epochs": 20, "patience": 5},
    "r.drop0.3": {"dropout_rate": 0.3},
    "r.bs32": {"batch_size": 32},
    "r.nomaxnorm": {"max_norm": None},
    "r.mf2": {"min_freq": 2},
    "r.e300.ptb.ep20": {"embedding_size": 300, "tokenizer": "ptb", "epochs": 20, "patience": 5},
    # pretrained vectors (fine-tuned unless the mode says otherwise)
    "g.base": {"embeddings": G},
    "g.vv100k": {"embeddings": G, "vector_vocab": 100_000},
    "g.vv30k": {"embeddings": G, "vector_vocab": 30_000},
    "g.ptb": {"embeddings": G, "tokenizer": "ptb"},
    "g.elr0.1": {"embeddings": G, "embedding_lr_scale": 0.1},
    "g.elr0.3": {"embeddings": G, "embedding_lr_scale": 0.3},
    "g.mc": {"embeddings": G, "embedding_mode": "multichannel"},
    "g.f200": {"embeddings": G, "feature_size": 200},
    "g.ep20p5": {"embeddings": G, "epochs": 20, "patience": 5},
    "g.lr1e-3.ep20": {"embeddings": G, "learning_rate": 1e-3, "epochs": 20, "patience": 5},
    "g.w2345": {"embeddings": G, "window_sizes": (2, 3, 4, 5)},
    "g.ptb.vv100k": {"embeddings": G, "tokenizer": "ptb", "vector_vocab": 100_000},
    "g.ptb.vv100k.elr0.3": {"embeddings": G, "tokenizer": "ptb", "vector_vocab": 100_000, "embedding_lr_scale": 0.3},
    "g.ptb.vv100k.elr0.1": {"embeddings": G, "tokenizer": "ptb", "vector_vocab": 100_000, "embedding_lr_scale": 0.1},
    "g.ptb.vv100k.mc": {"embeddings": G, "tokenizer": "ptb", "vector_vocab": 100_000,
                        "embedding_mode": "multichannel"},
    "g.ptb.vv100k.f200.ep20": {"embeddings": G, "tokenizer": "ptb", "vector_vocab": 100_000,
                               "feature_size": 200, "epochs": 20, "patience": 5},
    # second round (after the first showed a lower embedding learning rate hurting)
    "r.elr2": {"embedding_lr_scale": 2.0},
    "r.elr5": {"embedding_lr_scale": 5.0},
    "r.lr5e-3": {"learning_rate": 5e-3},
    "r.ptb.mf2": {"tokenizer": "ptb", "min_freq": 2},
    "r.ptb.mf2.elr2": {"tokenizer": "ptb", "min_freq": 2, "embedding_lr_scale": 2.0},
    "r.e300.ptb.mf2": {"embedding_size": 300, "tokenizer": "ptb", "min_freq": 2},
    "g.elr2": {"embeddings": G, "embedding_lr_scale": 2.0},
    "g.elr5": {"embeddings": G, "embedding_lr_scale": 5.0},
    "g.ptb.vv100k.elr2": {"embeddings": G, "tokenizer": "ptb", "vector_vocab": 100_000, "embedding_lr_scale": 2.0},
    "g.ptb.vv100k.elr5": {"embeddings": G, "tokenizer": "ptb", "vector_vocab": 100_000, "embedding_lr_scale": 5.0},
    "g.ptb.vv100k.mc.elr2": {"embeddings": G, "tokenizer": "ptb", "vector_vocab": 100_000,
                             "embedding_mode": "multichannel", "embedding_lr_scale": 2.0},
    "g.ptb.vv100k.mf2": {"embeddings": G, "tokenizer": "ptb", "vector_vocab": 100_000, "min_freq": 2},
    "g.vv100k.f200.ep20": {"embeddings": G, "vector_vocab": 100_000, "feature_size": 200, "epochs": 20, "patience": 5},
    "g.ptb.vv100k.ep20": {"embeddings": G, "tokenizer": "ptb", "vector_vocab": 100_000, "epochs": 20, "patience": 5},
    "g.ptb.vv100k.lr5e-3": {"embeddings": G, "tokenizer": "ptb", "vector_vocab": 100_000, "learning_rate": 5e-3},
    "g.vv100k.elr2": {"embeddings": G, "vector_vocab": 100_000, "embedding_lr_scale": 2.0},
}
# Rounds 1 and 2 ran before vector_vocab and embedding_lr_scale had automatic defaults: pin their values.
for _params in CONFIGS.values():
    if _params.get("embeddings") == G:
        _params.setdefault("vector_vocab", 0)
        _params.setdefault("embedding_lr_scale", 1.0)
# Third round: vector_vocab's default (100000 with vectors) and a rule tried then dropped, embedding_lr_scale =
# the vectors' std over the random init's (0.144): 4.79 for GloVe 6B 50d, 1.80 for the Tencent characters.
GLOVE_STD_RATIO, TENCENT_STD_RATIO = 4.79, 1.80
CONFIGS.update({
    "g.auto.mf2": {"embeddings": G, "min_freq": 2, "embedding_lr_scale": GLOVE_STD_RATIO},
    "g.auto.mf1": {"embeddings": G, "min_freq": 1, "embedding_lr_scale": GLOVE_STD_RATIO},
    "g.auto.mf2.elr1": {"embeddings": G, "min_freq": 2, "embedding_lr_scale": 1.0},
    "g.auto.mf2.ep20": {"embeddings": G, "min_freq": 2, "epochs": 20, "patience": 5, "embedding_lr_scale": GLOVE_STD_RATIO},
    "g.auto.ptb.mf2": {"embeddings": G, "min_freq": 2, "tokenizer": "ptb", "embedding_lr_scale": GLOVE_STD_RATIO},
    "g.auto.ptb.mf2.ep20": {"embeddings": G, "min_freq": 2, "tokenizer": "ptb", "epochs": 20, "patience": 5,
                            "embedding_lr_scale": GLOVE_STD_RATIO},
    # Fourth round: the new defaults against the old ones on other data (THUCNews characters, Tencent vectors).
    "d.rand": {"min_freq": 2},
    "d.rand.mf1": {"min_freq": 1},
    "d.vec": {"embeddings": G, "min_freq": 2, "embedding_lr_scale": TENCENT_STD_RATIO},
    "d.vec.elr1": {"embeddings": G, "min_freq": 2, "embedding_lr_scale": 1.0},
    "d.vec.mf1": {"embeddings": G, "min_freq": 1, "embedding_lr_scale": TENCENT_STD_RATIO},
    "d.vec.old": {"embeddings": G, "min_freq": 1, "embedding_lr_scale": 1.0, "vector_vocab": 0},
})


# Fifth round (CPU): word dropout, a sweep-only switch (no config field): during training each token is
# replaced by <unk> with probability p.
CONFIGS.update({
    "n.base": {},
    "n.wd0.1": {"word_dropout": 0.1},
    "n.wd0.2": {"word_dropout": 0.2},
    "n.g": {"embeddings": G},
    "n.g.wd0.1": {"embeddings": G, "word_dropout": 0.1},
    "n.g.wd0.2": {"embeddings": G, "word_dropout": 0.2},
})

# Rounds 6-11 (third session, CPU): weight averaging ("ema", which hooks the per-step max-norm call, so it
# needs max_norm set, as by default) and a decaying learning rate ("lr_gamma"), character windows,
# multi-label class weights, whole IMDB reviews, Kim's boundary padding (the "wpad" tokenizer).
CONFIGS.update({
    "s.r": {},
    "s.r.ema0.99": {"ema": 0.99},
    "s.r.ema0.998": {"ema": 0.998},
    "s.r.g0.8": {"lr_gamma": 0.8},
    "s.g": {"embeddings": G},
    "s.g.ema0.99": {"embeddings": G, "ema": 0.99},
    "s.g.ema0.998": {"embeddings": G, "ema": 0.998},
    "s.g.g0.8": {"embeddings": G, "lr_gamma": 0.8},
    # characters (thucnews; --vectors the Tencent file) and multi-label (goemotions: macro-F1)
    "c.w123": {"window_sizes": (1, 2, 3)},
    "c.w234": {"window_sizes": (2, 3, 4)},
    "c.w1234.f200": {"window_sizes": (1, 2, 3, 4), "feature_size": 200},
    "c.g.w123": {"embeddings": G, "window_sizes": (1, 2, 3)},
    "c.g.w234": {"embeddings": G, "window_sizes": (2, 3, 4)},
    "m.bal": {"class_weight": "balanced"},
    "p.r": {"tokenizer": "wpad"},
    "p.g": {"embeddings": G, "tokenizer": "wpad"},
    "i.len400": {"max_text_len": 400, "epochs": 4, "patience": 1},
    "i.full": {"max_text_len": 3000, "epochs": 4, "patience": 1},
    "i.g.len400": {"embeddings": G, "max_text_len": 400, "epochs": 4, "patience": 1},
    "i.g.full": {"embeddings": G, "max_text_len": 3000, "epochs": 4, "patience": 1},
    "m.g.bal": {"embeddings": G, "class_weight": "balanced"},
    "m.g.bal.ep20": {"embeddings": G, "class_weight": "balanced", "epochs": 20},
    "c.ep20": {"epochs": 20},  # with the new default windows 1,2,3 for characters
    "c.g.ep20": {"embeddings": G, "epochs": 20},
})


def patch_word_dropout(p: float) -> None:
    """Makes textcnn's training forward replace each real token by <unk> with probability ``p`` (0: restore)."""
    import torch

    import textcnn.training as training
    from textcnn.fastpath import training_forward

    if not p:
        training.training_forward = training_forward
        return

    def forward_with_word_dropout(model):
        forward = training_forward(model)

        def run(ids):
            drop = (torch.rand(ids.shape, device=ids.device) < p) & (ids > 1)  # (B, T): not padding, not <unk>
            return forward(ids.masked_fill(drop, 1))

        return run

    training.training_forward = forward_with_word_dropout


def patch_schedule(ema: float = 0.0, gamma: float = 1.0) -> None:
    """Sweep-only training switches: evaluate and keep an exponential moving average of the weights
    (``ema``: its decay per step, 0 off) and multiply the learning rate by ``gamma`` every epoch."""
    import torch

    import textcnn.training as training

    original = getattr(training, "_sweep_original_run_epoch", training._run_epoch)
    training._sweep_original_run_epoch = original
    if not ema and gamma == 1.0:
        training._run_epoch = original
        return
    state: dict = {}

    def run_epoch(model, train_ids, targets, lengths, loss_fn, optimizers, rng, s, epoch):
        if epoch == 1:
            state.clear()
        if "raw" in state:
            model.load_state_dict(state["raw"])  # training goes on from the raw weights, not the average
        for opt in optimizers:
            for g in opt.param_groups:
                g.setdefault("base_lr", g["lr"])
                g["lr"] = g["base_lr"] * gamma ** (epoch - 1)
        if ema:
            state.setdefault("ema", {k: v.detach().clone() for k, v in model.state_dict().items()})
            state.setdefault("steps", 0)
            step_norm = model.apply_max_norm

            @torch.no_grad()
            def after_step(max_norm):
                step_norm(max_norm)
                state["steps"] += 1
                d = min(ema, (1 + state["steps"]) / (10 + state["steps"]))
                for k, v in model.state_dict().items():
                    if v.is_floating_point():
                        state["ema"][k].lerp_(v, 1 - d)

            model.apply_max_norm = after_step
        try:
            return original(model, train_ids, targets, lengths, loss_fn, optimizers, rng, s, epoch)
        finally:
            if ema:
                del model.apply_max_norm
                state["raw"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                model.load_state_dict(state["ema"])

    training._run_epoch = run_epoch


class BoundaryPadded:
    """Words with ``n`` boundary tokens on each side: every word then starts and ends a full window, as in
    Kim's code, which pads each sentence with (widest window - 1) zero vectors before and after."""

    def __init__(self, lowercase: bool = True, n: int = 4) -> None:
        from textcnn.tokenizers import make_tokenizer

        self.inner, self.n, self.name, self.lowercase = make_tokenizer("word", lowercase), n, "wpad", lowercase

    def tokenize(self, text: str) -> list[str]:
        return ["<b>"] * self.n + self.inner.tokenize(text) + ["<b>"] * self.n

    def spec(self) -> dict:
        return {"name": self.name, "lowercase": self.lowercase}


def register_ptb() -> None:
    from textcnn.tokenizers import RegexTokenizer, register_tokenizer

    register_tokenizer("ptb", lambda lowercase=True: RegexTokenizer("ptb", PTB, lowercase))
    register_tokenizer("wpad", BoundaryPadded)


_DATA: dict = {}


def _split(data_dir: str, dataset: str, part: str, limit: int | None):
    from textcnn import read_records

    key = (dataset, part)
    if key not in _DATA:
        rec = read_records(Path(data_dir) / dataset / f"{part}.csv")
        _DATA[key] = (rec.texts[:limit], rec.labels[:limit])
    return _DATA[key]


def run_job(job: dict) -> dict:
    """Trains one configuration on one data set and seed; returns the JSON line's fields."""
    import numpy as np
    import torch

    from textcnn import TextCNNClassifier

    torch.set_num_threads(1)
    register_ptb()
    params = {k: (job["vectors"] if v == G else v) for k, v in CONFIGS[job["config"]].items()}
    out = {"config": job["config"], "dataset": job["dataset"], "seed": job["seed"], "params": dict(params)}
    patch_word_dropout(params.pop("word_dropout", 0.0))  # workers run many jobs: always set or restore
    patch_schedule(params.pop("ema", 0.0), params.pop("lr_gamma", 1.0))
    try:
        train = _split(job["data_dir"], job["dataset"], "train", job["limit"])
        dev = _split(job["data_dir"], job["dataset"], "dev", job["limit"])
        test = _split(job["data_dir"], job["dataset"], "test", job["limit"])
        started = time.perf_counter()
        clf = TextCNNClassifier(**params, seed=job["seed"], device=job["device"], verbose=0)
        clf.fit(*train, validation_data=dev)
        out["seconds"] = round(time.perf_counter() - started, 2)
        for name, (texts, labels) in (("dev", dev), ("test", test)):
            if clf.multi_label_:  # macro-F1 x 100 with the thresholds tuned on dev
                out[name] = clf.evaluate(texts, labels)["macro_f1"] * 100
            else:
                out[name] = float(np.mean(clf.predict(texts) == np.asarray(labels, dtype=object))) * 100
        out["best_epoch"] = clf.best_epoch_
        out["vocab"] = len(clf.vocab_)
        out["embedding_lr_scale"] = clf.config_.embedding_lr_scale
    except Exception:  # a broken configuration is recorded, not fatal to the sweep
        out["error"] = traceback.format_exc()[-2000:]
    return out


def summarize(path: str, datasets: list[str]) -> None:
    """Prints mean ± std of dev accuracy per configuration and data set (test means after the bar)."""
    import statistics

    runs: dict = {}
    for line in open(path, encoding="utf-8"):
        row = json.loads(line)
        if "error" not in row:
            runs.setdefault(row["config"], {}).setdefault(row["dataset"], []).append(row)
    lines = []
    for config, by_data in runs.items():
        devs = [[r["dev"] for r in by_data.get(d, [])] for d in datasets]
        if not all(len(v) >= 2 for v in devs):
            continue
        cells = [f"{statistics.mean(v):6.2f} ± {statistics.stdev(v):4.2f}" for v in devs]
        tests = [statistics.mean(r["test"] for r in by_data[d]) for d in datasets]
        mean = statistics.mean(statistics.mean(v) for v in devs)
        lines.append((mean, f"{config:26s} n{min(map(len, devs))}  " + "  ".join(cells) + f"  mean {mean:6.2f} | test "
                      + " ".join(f"{t:5.2f}" for t in tests)))
    print(f"dev accuracy % ({', '.join(datasets)}), best first")
    for _, line in sorted(lines, reverse=True):
        print(line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    p.add_argument("--datasets", nargs="+", default=["mr", "sst2", "trec"])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--vectors", default="glove-6b-50d")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", help="JSON lines to append to")
    p.add_argument("--summary", metavar="JSONL", help="print the table of a finished sweep and exit")
    args = p.parse_args(argv)
    if args.summary:
        summarize(args.summary, args.datasets)
        return 0
    if not args.out:
        print("error: --out is required to run a sweep", file=sys.stderr)
        return 2
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        print(f"error: unknown configuration(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    jobs = [{"config": c, "dataset": d, "seed": s, "vectors": args.vectors, "data_dir": args.data_dir,
             "device": args.device, "limit": args.limit}
            for s in range(args.first_seed, args.first_seed + args.seeds) for c in args.configs for d in args.datasets]
    started = time.perf_counter()
    with open(args.out, "a", encoding="utf-8") as f, mp.get_context("spawn").Pool(args.workers) as pool:
        for n, row in enumerate(pool.imap_unordered(run_job, jobs), start=1):
            f.write(json.dumps(row) + "\n")
            f.flush()
            shown = row.get("error", "").strip().splitlines()[-1:] or [f"dev {row['dev']:.2f} test {row['test']:.2f} "
                                                                      f"ep {row['best_epoch']} {row['seconds']}s"]
            print(f"[{n}/{len(jobs)} {time.perf_counter() - started:.0f}s] {row['config']} {row['dataset']} "
                  f"seed {row['seed']}: {shown[0]}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
