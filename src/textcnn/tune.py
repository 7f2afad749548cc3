"""``textcnn tune``: a time-budgeted search for the settings that matter, scored on dev only.

Like fastText's autotune: give it a training set, a dev set and a budget; it tries settings with
Optuna's TPE sampler (the library defaults are the first trial), stops hopeless trials early with a
median pruner on the per-epoch dev score and cuts the last trial at the search's deadline (its best
epoch so far still counts).

One dev score picks noise as often as a better setting: the best of 30-60 trials on a dev set of a
thousand texts is mostly luck. So the search gets the first part of the budget (``TUNE_SEARCH_SHARE``) and the
rest retrains the ``rescore`` best settings once more with the next seed; the setting with the best
mean dev score over its two runs wins. The model returned is its run with the caller's seed (picking the
better of the two runs would be choosing on noise again), so when the defaults win, tune returns what
``textcnn train`` with that seed gives.

Settings the caller fixes (keyword arguments, command-line flags) are not searched. Test data is never
seen here: choose on dev, report test afterwards with ``textcnn eval``.
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .atomicdir import replace_file

from .classifier import TextCNNClassifier
from .config import (DEFAULT_NGRAM_FEATURES, TUNE_RESCORE, TUNE_SEARCH_SHARE, TextCNNConfig, default_learning_rate,
                     resolve_monitor)
from .errors import ConfigError
from .data import stratified_split
from .labels import detect_multi_label, normalise_labels
from .training import Callback

WINDOW_CHOICES = ("auto", "1,2,3", "2,3,4", "3,4,5", "1,2,3,4", "2,3,4,5", "1,2,3,4,5")  # auto: the tokenizer's
FEATURE_CHOICES = (50, 100, 200, 300)
EPOCH_CHOICES = (5, 10, 20)
BATCH_CHOICES = (32, 50, 64, 128)
NGRAM_CHOICES = (0, DEFAULT_NGRAM_FEATURES)  # the n-gram channel off, or on with the default buckets

# name -> how a trial draws it; the value a trial gets is a config value (window sizes: a tuple or None)
SPACE: dict[str, Callable[[Any], Any]] = {
    "learning_rate": lambda t: t.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
    "dropout_rate": lambda t: t.suggest_float("dropout_rate", 0.0, 0.7),
    "feature_size": lambda t: t.suggest_categorical("feature_size", FEATURE_CHOICES),
    "window_sizes": lambda t: _windows(t.suggest_categorical("window_sizes", WINDOW_CHOICES)),
    "epochs": lambda t: t.suggest_categorical("epochs", EPOCH_CHOICES),
    "batch_size": lambda t: t.suggest_categorical("batch_size", BATCH_CHOICES),
    "ngram_features": lambda t: t.suggest_categorical("ngram_features", NGRAM_CHOICES),
}


def searched(fixed: set[str]) -> list[str]:
    """The settings a search tries: those of SPACE the caller did not fix."""
    return [name for name in SPACE if name not in fixed]


def _windows(text: str) -> tuple[int, ...] | None:
    return None if text == "auto" else tuple(int(k) for k in text.split(","))


def _hold_out(texts, labels, cfg: TextCNNConfig, multi: bool) -> tuple[list, list, list, list]:
    texts, labels = list(texts), normalise_labels(list(labels), multi, cfg.label_sep)
    train_idx, dev_idx = stratified_split(labels, cfg.dev_fraction, cfg.seed)
    pick = lambda rows, idx: [rows[i] for i in idx]  # noqa: E731
    return pick(texts, train_idx), pick(labels, train_idx), pick(texts, dev_idx), pick(labels, dev_idx)


def write_trials(trials: list[dict], path) -> None:
    """The table of trials as CSV, written atomically (every column any trial has)."""
    columns = list(dict.fromkeys(k for row in trials for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(trials)
    replace_file(Path(path), out.getvalue().encode("utf-8"))


def _as_choice(name: str, value: Any) -> Any:
    """A config value as the search space names it (the first trial: the defaults)."""
    if name == "window_sizes":
        return "auto" if value is None else ",".join(map(str, value))
    return value


def _default(base: TextCNNConfig, name: str) -> Any:
    """The first trial's value: the config's, with None resolved as training would (learning_rate per input)."""
    if name == "learning_rate" and base.learning_rate is None:
        return default_learning_rate(base.encoder)
    return _as_choice(name, getattr(base, name))


def parse_budget(text: str) -> float:
    """'10m', '90s', '1h', '1h30m' or plain seconds ('600') -> seconds."""
    raw = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        seconds = float(raw)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise ConfigError(f"--budget {text!r} is not a duration. Use seconds (600) or units: 90s, 10m, 1h, 1h30m.")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"--budget {text!r} must be more than zero.")
    return seconds


@dataclass
class TuneResult:
    """The best model (trained on train, early-stopped on dev), its dev score and every trial."""

    best: TextCNNClassifier
    best_score: float
    monitor: str
    trials: list[dict] = field(default_factory=list)
    chosen: dict = field(default_factory=dict)  # the winning setting's trial row (mean_dev_* when re-scored)


class TrialReporter(Callback):
    """Reports each epoch's dev score to the Optuna trial (None: none); stops at the deadline or when pruned."""

    name = "tune"

    def __init__(self, trial, monitor: str, deadline: float) -> None:
        self.trial, self.monitor, self.deadline = trial, monitor, deadline
        self.pruned = self.cut = False

    def on_step_end(self, loop) -> None:
        if time.monotonic() >= self.deadline:
            self.cut = loop.stop = True
            loop.stop_reason = "tune: the time budget is spent"

    def on_epoch_end(self, loop, entry: dict) -> None:
        if self.trial is None:  # a re-scoring run: never pruned
            return
        self.trial.report(entry[f"dev_{self.monitor}"], entry["epoch"])
        if not self.cut and not loop.stop and self.trial.should_prune():
            self.pruned = loop.stop = True
            loop.stop_reason = "tune: pruned (dev score below the median of earlier trials at this epoch)"


def tune(
    train_texts: Sequence[str], train_labels: Sequence, dev_texts: Sequence[str] | None = None,
    dev_labels: Sequence | None = None, *, budget_s: float, fixed: dict[str, Any] | None = None, max_trials: int | None = None,
    rescore: int = TUNE_RESCORE, log: Callable[[str], None] = print,
) -> TuneResult:
    """Searches settings for ``budget_s`` seconds (or ``max_trials`` trials) and returns the best on dev.

    Args:
        dev_texts, dev_labels: the dev set every trial is scored on; None holds out a stratified
            ``dev_fraction`` of train once, the same for every trial.
        fixed: config values that are not searched (``seed`` included: every trial trains with it).
        max_trials: stop searching after this many trials even if time is left.
        rescore: how many of the best settings are trained again with the next seed once the search has
            had ``TUNE_SEARCH_SHARE`` of the budget (0: the search has it all and its single best run wins).
    """
    try:
        import optuna
    except ImportError:
        raise ConfigError("textcnn tune needs Optuna: pip install 'textcnn[tune]'") from None
    if rescore < 0:
        raise ConfigError(f"--rescore {rescore} must be 0 or more.")
    fixed = dict(fixed or {})
    base = TextCNNConfig.from_dict(fixed)  # a bad fixed value fails before any work
    multi, _, _ = detect_multi_label(list(train_labels), base.multi_label, base.label_sep)
    monitor = resolve_monitor(base.monitor, multi)
    if dev_texts is None:
        train_texts, train_labels, dev_texts, dev_labels = _hold_out(train_texts, train_labels, base, multi)
        log(f"tune: no dev set given: holding out a stratified {base.dev_fraction:.0%} of train "
            f"({len(dev_texts)} texts) for every trial")
    minimise, key = monitor == "loss", f"dev_{monitor}"
    end = time.monotonic() + budget_s
    search_end = end - budget_s * (1 - TUNE_SEARCH_SHARE) if rescore else end
    runs: list[tuple[float, dict, dict, TextCNNClassifier]] = []  # (score, row, params, model): the best finished
    trials: list[dict] = []
    names = searched(set(fixed))
    ranked = lambda rows: sorted(rows, key=lambda r: r[0], reverse=not minimise)  # noqa: E731, best first

    def train(params: dict, seed: int, deadline: float, trial=None) -> tuple[TextCNNClassifier, dict]:
        clf = TextCNNClassifier(**{**fixed, **params, "seed": seed}, verbose=0)
        reporter = TrialReporter(trial, monitor, deadline)
        started = time.monotonic()
        clf.fit(train_texts, train_labels, validation_data=(dev_texts, dev_labels), callbacks=[reporter])
        row = {"trial": trial.number if trial else None, "seed": seed, **{k: _as_choice(k, v) for k, v in params.items()},
               key: round(clf.history_[clf.best_epoch_ - 1][key], 4), "best_epoch": clf.best_epoch_,
               "epochs_run": len(clf.history_), "seconds": round(time.monotonic() - started, 1),
               "state": "pruned" if reporter.pruned else "cut at the deadline" if reporter.cut else "complete"}
        return clf, row

    def objective(trial) -> float:
        params = {name: SPACE[name](trial) for name in names}
        clf, row = train(params, base.seed, search_end, trial)
        trials.append(row)
        log(_trial_line(row, monitor))
        if row["state"] == "pruned":
            raise optuna.TrialPruned()
        score = clf.history_[clf.best_epoch_ - 1][key]
        runs[:] = ranked([*runs, (score, row, params, clf)])[:max(rescore, 1)]
        if row["state"] != "complete":
            trial.study.stop()
        return score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize" if minimise else "maximize",
        sampler=optuna.samplers.TPESampler(seed=base.seed, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    study.enqueue_trial({name: _default(base, name) for name in names})  # the defaults first
    log(f"tune: searching {', '.join(names) or 'nothing (every searched setting is fixed)'} for "
        f"{_duration(search_end - time.monotonic())} on dev {monitor}"
        + (f", then the best {rescore} again with seed {base.seed + 1}" if rescore else ""))
    study.optimize(objective, n_trials=max_trials, timeout=max(search_end - time.monotonic(), 0), catch=())
    if not runs:
        raise ConfigError("tune: no trial finished within the budget. Give more time with --budget.")
    score, row, _, best = runs[0]
    chosen = dict(row)
    means = []  # (mean, first run's row, score and model)
    for first_score, first_row, params, first_model in runs if rescore else []:
        if time.monotonic() >= end:
            log(f"rescore: no time left for trial {first_row['trial']}")
            break
        clf, again = train(params, base.seed + 1, end)
        again["trial"] = first_row["trial"]
        trials.append(again)
        if again["state"] != "complete":
            log(f"rescore: trial {first_row['trial']} with seed {base.seed + 1} was cut at the deadline: not counted")
            break
        second = clf.history_[clf.best_epoch_ - 1][key]
        mean = (first_score + second) / 2
        again[f"mean_{key}"] = round(mean, 4)
        log(f"rescore: {_trial_line(again, monitor)}; mean of both seeds {mean:.4f}")
        means.append((mean, first_row, first_score, first_model))
    if means:
        mean, first_row, score, best = ranked(means)[0]
        chosen = {**first_row, f"mean_{key}": round(mean, 4)}
        log(f"tune: trial {first_row['trial']} has the best mean dev {monitor} over seeds {base.seed} and "
            f"{base.seed + 1}: {mean:.4f}")
    log(f"tune: best dev {monitor} {score:.4f} after {len(trials)} run(s)")
    return TuneResult(best, float(score), monitor, trials, chosen)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _trial_line(row: dict, monitor: str) -> str:
    settings = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                         if k not in ("trial", "seed", f"dev_{monitor}", f"mean_dev_{monitor}", "best_epoch", "epochs_run", "seconds",
                                      "state"))
    return (f"trial {row['trial']} (seed {row['seed']}): dev {monitor} {row[f'dev_{monitor}']:.4f} (epoch {row['best_epoch']}/"
            f"{row['epochs_run']}, {row['seconds']} s, {row['state']}) {settings}")
