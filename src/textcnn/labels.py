"""Labels in one place: single- or multi-label, normalisation, the canonical form, target tensors.

Single-label data holds one label per text (a str, an int, ...). Multi-label data holds a list of
labels per text, or strings joined by ``label_sep`` (``"travel|weather"``). Labels are compared in
one canonical form, ``str(label)``: a model trained from Python on the ints 0 and 1 evaluates a CSV
file whose labels are the strings "0" and "1".
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import numpy as np

from .errors import DataFormatError

FEW_JOINED = 0.1  # below this share of labels holding the separator, reading the data as multi-label warns


def canonical(label) -> str:
    """The form labels are compared in: ``1``, ``np.int64(1)`` and ``"1"`` are one label."""
    return str(label)


def _python_index(i: int) -> str:
    return f"y[{i}]"


def detect_multi_label(labels: Sequence, multi_label: bool | None, sep: str) -> tuple[bool, str | None, bool]:
    """Whether each text may carry several labels, a note when that was read off separators, and
    whether the note is a warning (few labels hold the separator: perhaps it is part of a name).

    ``multi_label`` True or False decides; None detects it: lists of labels, or any string label
    containing ``sep``, make the data multi-label.
    """
    if multi_label is not None:
        return multi_label, None, False
    if any(isinstance(y, (list, tuple)) for y in labels):
        return True, None, False
    joined = [y for y in labels if isinstance(y, str) and sep in y]
    if not joined:
        return False, None, False
    return True, (
        f"{len(joined)} of {len(labels)} labels contain the label separator {sep!r} (for example {joined[0]!r}), "
        f"so the data is read as multi-label: each text may carry several labels, split on {sep!r}. "
        f"If {sep!r} is part of your label names, pass --no-multi-label (multi_label=False) for one label per "
        "text, or set another --label-sep (label_sep)."
    ), len(joined) < FEW_JOINED * len(labels)


def normalise_labels(labels: Sequence, multi: bool, sep: str,
                     where: Callable[[int], str] = _python_index) -> list:
    """Single-label: the labels unchanged. Multi-label: per text, a sorted list of distinct stripped str.

    ``where(i)`` names row ``i`` in errors (``y[3]`` from Python, ``train.csv, line 5`` from the CLI).
    """
    if not multi:
        for i, y in enumerate(labels):
            if isinstance(y, (list, tuple)):
                raise DataFormatError(f"{where(i)}: the label is a list ({y!r}), but multi_label=False. Pass one "
                                      "label per text, or set multi_label=True (--multi-label on the CLI).")
        return list(labels)
    out = []
    for i, y in enumerate(labels):
        items = y if isinstance(y, (list, tuple)) else canonical(y).split(sep)
        row = sorted({canonical(item).strip() for item in items} - {""})
        if not row:
            raise DataFormatError(
                f"{where(i)}: the label {y!r} holds no label once split on {sep!r} and stripped. Give every text "
                f"at least one label; if {sep!r} is part of a label name, pass --no-multi-label "
                "(multi_label=False) or set another --label-sep."
            )
        out.append(row)
    return out


def class_list(labels: Sequence, multi: bool) -> list:
    """The distinct labels, one per canonical form, sorted (by value when they compare, else as str)."""
    distinct: dict[str, object] = {}
    for y in labels:
        for label in (y if multi else [y]):
            distinct.setdefault(canonical(label), label)
    try:
        return sorted(distinct.values())
    except TypeError:  # ints mixed with strings
        return sorted(distinct.values(), key=canonical)


def label_targets(labels: Sequence, classes: Sequence, multi: bool, what: str,
                  among: str = "the model's classes") -> np.ndarray:
    """Class ids (N,) int64 for single-label, a 0/1 float32 matrix (N, C) for multi-label (NumPy: no torch here).

    A label that is not among ``classes`` is refused, for both tasks: the model cannot predict it,
    and leaving it out would inflate the scores. ``what`` names the labels in the error
    ("dev", "evaluation"), ``among`` the classes.
    """
    index = {canonical(c): i for i, c in enumerate(classes)}
    rows = [[canonical(c) for c in y] if multi else [canonical(y)] for y in labels]
    unknown = Counter(c for row in rows for c in row if c not in index)
    if unknown:
        shown = ", ".join(f"{c!r} ({n} text{'s' if n > 1 else ''})" for c, n in sorted(unknown.items())[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise DataFormatError(
            f"The {what} labels {shown}{more} are not among {among} "
            f"({', '.join(map(canonical, classes[:20]))}{', ...' if len(classes) > 20 else ''}). The model cannot "
            f"predict them, so they are refused rather than scored. Remove those texts from the {what} data, or "
            "train with examples of those labels."
        )
    if not multi:
        return np.array([index[row[0]] for row in rows], dtype=np.int64)
    out = np.zeros((len(rows), len(classes)), dtype=np.float32)
    for r, row in enumerate(rows):
        out[r, [index[c] for c in row]] = 1.0
    return out


def soft_targets_for(classes: Sequence, soft_classes: Sequence, probabilities, n_texts: int) -> np.ndarray:
    """Class probabilities (N, C) float32 in ``classes`` order from a matrix whose columns follow ``soft_classes``.

    For training on a teacher's outputs (textcnn.distill): the teacher's classes must be the student's.
    """
    proba = np.asarray(probabilities, dtype=np.float32)
    if proba.shape != (n_texts, len(soft_classes)):
        raise DataFormatError(f"soft_targets holds a {proba.shape} matrix; {n_texts} texts x {len(soft_classes)} "
                              "classes are needed, one row per training text and one column per class.")
    index = {canonical(c): i for i, c in enumerate(soft_classes)}
    missing = [canonical(c) for c in classes if canonical(c) not in index]
    if missing or len(index) != len(classes):
        raise DataFormatError(f"soft_targets' classes ({', '.join(map(canonical, soft_classes))}) are not the training "
                              f"labels' ({', '.join(map(canonical, classes))}). Give one column per training class.")
    if not np.isfinite(proba).all() or (proba < 0).any() or (proba > 1).any():
        raise DataFormatError("soft_targets must hold probabilities in [0, 1] (apply softmax or sigmoid to logits).")
    return np.ascontiguousarray(proba[:, [index[canonical(c)] for c in classes]])
