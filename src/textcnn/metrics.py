"""Accuracy, precision / recall / F1 (per class, macro, weighted, micro) and the confusion matrix."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return precision, recall, f1


def _per_class(labels: list[str], p, r, f, support) -> dict[str, dict[str, float]]:
    return {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
        for i, name in enumerate(labels)
    }


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: list[str]) -> dict:
    """Single-label report: accuracy, macro and weighted P/R/F1, per class, confusion matrix."""
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    p, r, f = _prf(tp, cm.sum(axis=0) - tp, support - tp)
    weights = support / max(support.sum(), 1)
    return {
        "task": "single-label",
        "n": int(cm.sum()),
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_precision": float(p.mean()),
        "macro_recall": float(r.mean()),
        "macro_f1": float(f.mean()),
        "weighted_precision": float((p * weights).sum()),
        "weighted_recall": float((r * weights).sum()),
        "weighted_f1": float((f * weights).sum()),
        "labels": list(labels),
        "per_class": _per_class(labels, p, r, f, support),
        "confusion_matrix": cm.tolist(),
    }


def multilabel_report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Multi-label report from (N, L) 0/1 matrices: micro and macro P/R/F1, per label, subset accuracy."""
    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    tp = (y_true & y_pred).sum(axis=0).astype(float)
    fp = (~y_true & y_pred).sum(axis=0).astype(float)
    fn = (y_true & ~y_pred).sum(axis=0).astype(float)
    p, r, f = _prf(tp, fp, fn)
    mp, mr, mf = _prf(np.array([tp.sum()]), np.array([fp.sum()]), np.array([fn.sum()]))
    support = y_true.sum(axis=0)
    weights = support / max(support.sum(), 1)
    return {
        "task": "multi-label",
        "n": int(y_true.shape[0]),
        "accuracy": float((y_true == y_pred).all(axis=1).mean()),  # exact-match (subset) accuracy
        "micro_precision": float(mp[0]),
        "micro_recall": float(mr[0]),
        "micro_f1": float(mf[0]),
        "macro_precision": float(p.mean()),
        "macro_recall": float(r.mean()),
        "macro_f1": float(f.mean()),
        "weighted_f1": float((f * weights).sum()),
        "labels": list(labels),
        "per_class": _per_class(labels, p, r, f, support),
        "confusion_matrix": [
            [[int(((~y_true[:, j]) & (~y_pred[:, j])).sum()), int(fp[j])], [int(fn[j]), int(tp[j])]]
            for j in range(len(labels))
        ],
    }


def best_thresholds(y_true: np.ndarray, probs: np.ndarray, grid: Sequence[float] | None = None) -> np.ndarray:
    """Per-label threshold maximising that label's F1 on dev data (ties: the threshold nearest 0.5)."""
    grid = np.asarray(grid if grid is not None else np.arange(0.05, 0.96, 0.01))
    y_true = np.asarray(y_true, dtype=bool)
    out = np.full(probs.shape[1], 0.5)
    for j in range(probs.shape[1]):
        pred = probs[:, j][:, None] >= grid[None, :]  # (N, G)
        t = y_true[:, j][:, None]
        tp = (pred & t).sum(0).astype(float)
        fp = (pred & ~t).sum(0).astype(float)
        fn = (~pred & t).sum(0).astype(float)
        f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
        if f1.max() > 0:
            best = np.flatnonzero(f1 == f1.max())
            out[j] = grid[best[np.argmin(np.abs(grid[best] - 0.5))]]
    return out
