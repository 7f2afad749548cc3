"""The model card: what a saved model is, what it was trained on, how well it did, and its limits.

Every model directory holds two renderings of the same facts, written when the model is saved:

    MODEL_DIR/card.json   the facts as JSON (the server's /v1/metadata can return them as they are)
    MODEL_DIR/README.md   the card for people (``textcnn card MODEL_DIR`` prints it)

The facts hold file names, sizes and sha256 hashes of the training data, never their directories,
so they can be shown to anyone who may see the model. ``textcnn eval`` adds the test metrics.
This module imports neither torch nor the classifier: it reads the classifier's attributes.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from .atomicdir import file_sha256, replace_file
from .errors import ModelFormatError

CARD_FORMAT = 1
FACTS_FILE, CARD_FILE = "card.json", "README.md"
_HEADLINE = ("accuracy", "macro_f1", "weighted_f1", "micro_f1", "macro_precision", "macro_recall")

INTENDED_USE = (
    "Assigning the labels listed above to texts like those it was trained on: the same language, domain, "
    "style and period. It suits high-volume classification where speed and per-prediction explanations "
    "(`textcnn explain`) matter, and serves as a strong, cheap baseline."
)
LIMITATIONS = (
    "It knows only the labels it was trained on; a single-label model gives every text one of them, "
    "even a text that belongs to none.",
    "Probabilities are softmax (or sigmoid) outputs, not calibrated confidences.",
    "Texts are cut to `max_text_len` tokens; words not seen in training are all read as one unknown token.",
    "The metrics above hold for data like the test data. On other domains, languages or periods the "
    "accuracy is unknown: measure it with `textcnn eval MODEL_DIR YOUR_TEST_FILE`.",
    "It learns whatever patterns and biases its training data holds, including unwanted ones; review its "
    "errors per class before using it for decisions about people.",
)


# ----- facts recorded while training -----

def label_counts(labels) -> dict[str, int]:
    """Texts per label (multi-label: each label of a row counts once), most frequent first."""
    counts = Counter(str(y) for row in labels for y in (row if isinstance(row, (list, tuple)) else [row]))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def python_data(train_labels, dev_labels, dev_source: str) -> dict:
    """The training data facts of ``fit`` (texts given as Python objects): rows and label counts per split."""
    return {
        "source": "Python objects",
        "train": {"rows": len(train_labels), "label_counts": label_counts(train_labels)},
        "dev": {"rows": len(dev_labels), "label_counts": label_counts(dev_labels), "from": dev_source},
        "files": [],
    }


def record_files(clf, **files) -> None:
    """Adds the files the training data came from (``train=path, dev=path``): name, size, sha256.

    Only the file's name is kept, never its directory (the card may be shown to anyone).
    """
    facts = getattr(clf, "training_data_", None)
    if facts is None:
        return
    facts["source"] = "files"
    facts["files"] = [file_facts(path, role) for role, path in files.items() if path is not None]
    if files.get("dev") is not None:
        facts["dev"]["from"] = f"the dev file {facts['files'][-1]['name']}"


def file_facts(path, role: str) -> dict:
    if str(path) == "-":
        return {"role": role, "name": "<stdin>"}
    path = Path(path)
    return {"role": role, "name": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


# ----- the facts of a fitted classifier -----

def card_facts(clf) -> dict:
    """Every fact of the card as a JSON-safe dict (no file paths): for card.json and /v1/metadata."""
    from . import __version__

    data = getattr(clf, "training_data_", None)
    return {
        "card_format": CARD_FORMAT,
        "textcnn_version": __version__,
        "task": "multi-label" if clf.multi_label_ else "single-label",
        "labels": [str(c) for c in clf.classes_],
        "label_counts": None if data is None else data["train"]["label_counts"],
        "thresholds": None if clf.thresholds_ is None else [round(float(t), 4) for t in clf.thresholds_],
        "training_data": data,
        "settings": public_settings(clf.config_.to_dict()),
        "vocabulary_size": len(clf.vocab_),
        "parameters": sum(p.numel() for p in clf.model_.parameters()),
        "dev_metrics": dev_metrics(getattr(clf, "history_", [])),
        "test_metrics": {},
        "intended_use": INTENDED_USE,
        "limitations": list(LIMITATIONS),
    }


def public_settings(config: dict) -> dict:
    """A model's config without file paths: pretrained vectors named by their file's basename."""
    if config.get("embeddings"):
        config = {**config, "embeddings": os.path.basename(str(config["embeddings"]))}
    return config


def dev_metrics(history: list[dict]) -> dict | None:
    """The dev scores of the best epoch (the weights that were kept)."""
    best = [e for e in history if e.get("best")]
    if not best:
        return None
    entry = best[-1]
    scores = {k[4:]: round(v, 4) for k, v in entry.items() if k.startswith("dev_") and isinstance(v, (int, float))}
    return {"best_epoch": entry["epoch"], "epochs_run": len(history), **scores}


def card_files(clf) -> dict[str, bytes]:
    """card.json and README.md as bytes, for the model's save to write with the other files."""
    facts = card_facts(clf)
    return {FACTS_FILE: _facts_json(facts).encode("utf-8"), CARD_FILE: render_card(facts).encode("utf-8")}


def read_facts(directory) -> dict | None:
    """The facts saved in a model directory, or None for a model saved before cards existed."""
    file = Path(directory) / FACTS_FILE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{file} is damaged (not valid JSON: {e}). Save the model again to rewrite it.") from None


def record_test(directory, clf, test_file, report: dict) -> dict:
    """Adds a ``textcnn eval`` report's headline to the card (keyed by the test file's name); returns the facts."""
    directory = Path(directory)
    facts = read_facts(directory) or card_facts(clf)
    entry = file_facts(test_file, "test")
    entry.pop("role")
    entry.update({"rows": report["n"], **{k: round(report[k], 4) for k in _HEADLINE if k in report}})
    facts.setdefault("test_metrics", {})[entry.pop("name")] = entry
    _write_facts(directory, facts)
    return facts


def _write_facts(directory: Path, facts: dict) -> None:
    replace_file(directory / FACTS_FILE, _facts_json(facts).encode("utf-8"))
    replace_file(directory / CARD_FILE, render_card(facts).encode("utf-8"))


def _facts_json(facts: dict) -> str:
    return json.dumps(facts, ensure_ascii=False, indent=1) + "\n"


# ----- the card for people -----

def render_card(facts: dict) -> str:
    """The README.md model card (Markdown) from the facts."""
    lines = ["# Model card: textcnn text classifier", "",
             f"A {facts['task']} TextCNN (Kim 2014) classifier, trained and saved with textcnn "
             f"{facts['textcnn_version']}. Load it with `textcnn.load(MODEL_DIR)`; "
             "`textcnn predict MODEL_DIR --input FILE --output FILE` classifies a file.", ""]
    lines += _labels_section(facts)
    lines += _data_section(facts.get("training_data"))
    lines += ["## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {_show(v)} |" for k, v in facts["settings"].items()]
    lines += [f"| vocabulary size (learned) | {facts['vocabulary_size']} |", f"| parameters (learned) | {facts['parameters']:,} |"]
    lines += [""] + _metrics_section(facts)
    lines += ["## Intended use", "", facts["intended_use"], "", "## Limits", ""]
    lines += [f"- {text}" for text in facts["limitations"]]
    return "\n".join(lines) + "\n"


def _labels_section(facts: dict) -> list[str]:
    counts = facts.get("label_counts") or {}
    lines = [f"## Labels ({len(facts['labels'])})", "", "| label | training texts |" +
             (" threshold |" if facts.get("thresholds") else ""), "|---|---:|" + ("---:|" if facts.get("thresholds") else "")]
    for i, label in enumerate(facts["labels"]):
        threshold = f" {facts['thresholds'][i]} |" if facts.get("thresholds") else ""
        lines.append(f"| {_md(label)} | {counts.get(label, 'not recorded')} |{threshold}")
    return lines + [""]


def _data_section(data: dict | None) -> list[str]:
    lines = ["## Training data", ""]
    if data is None:
        return lines + ["Not recorded (the model was saved by a textcnn without model cards, or loaded and saved again).", ""]
    if data["files"]:
        lines += ["| file | role | bytes | sha256 |", "|---|---|---:|---|"]
        lines += [f"| {_md(f['name'])} | {f['role']} | {f.get('bytes', '')} | `{f.get('sha256', '')}` |" for f in data["files"]]
    else:
        lines.append(f"Given as {data['source']} (no files).")
    dev = data["dev"]
    lines += ["", f"- train split: {data['train']['rows']} texts ({_counts(data['train']['label_counts'])})",
              f"- dev split: {dev['rows']} texts, {dev['from']} ({_counts(dev['label_counts'])})"]
    if data.get("distilled"):
        d = data["distilled"]
        teacher = f" of the teacher {_md(d['teacher'])}" if d.get("teacher") else " of a teacher model"
        lines.append(f"- distilled: trained on the soft targets{teacher} over {d['texts']} labelled and {d['augmented']} "
                     f"augmented texts (alpha {d['alpha']}, temperature {d['temperature']}"
                     + (f"; {d['words_with_neighbours']} words replaced by their neighbours in the teacher's encoder"
                        if d.get("words_with_neighbours") else "")
                     + (f"; started from the static vectors of the teacher's encoder for {d['teacher_vectors']} words"
                        if d.get("teacher_vectors") else "") + ")")
    return lines + [""]


def _metrics_section(facts: dict) -> list[str]:
    lines = ["## Metrics", ""]
    dev = facts.get("dev_metrics")
    if dev:
        scores = ", ".join(f"{k} {v}" for k, v in dev.items() if k not in ("best_epoch", "epochs_run"))
        lines.append(f"- dev (best epoch {dev['best_epoch']} of {dev['epochs_run']}, whose weights were kept): {scores}")
    else:
        lines.append("- dev: not recorded")
    tests = facts.get("test_metrics") or {}
    for name, t in tests.items():
        scores = ", ".join(f"{k} {t[k]}" for k in _HEADLINE if k in t)
        lines.append(f"- test on {_md(name)} ({t['rows']} texts, sha256 `{t.get('sha256', '')[:12]}`): {scores}")
    if not tests:
        lines.append("- test: none yet (`textcnn eval MODEL_DIR TEST_FILE` adds them here)")
    return lines + [""]


def _counts(counts: dict) -> str:
    shown = ", ".join(f"{_md(k)} {v}" for k, v in list(counts.items())[:20])
    return shown + (f", and {len(counts) - 20} more labels" if len(counts) > 20 else "")


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "none" if value is None else _md(str(value))


def _md(text: str) -> str:
    """A value inside a Markdown table cell: pipes escaped, on one line."""
    return str(text).replace("|", "\\|").replace("\n", " ")
