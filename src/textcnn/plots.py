"""Pictures of evaluation results (matplotlib, extra ``plot``)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import missing_dependency


def save_confusion_png(report: dict, path) -> Path:
    """Draws the single-label confusion matrix of an ``evaluate`` report; written atomically."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise missing_dependency("matplotlib", "plot", "--confusion-png") from e
    import numpy as np

    cm = np.asarray(report["confusion_matrix"])
    if cm.ndim != 2:
        cm = cm.sum(axis=0)  # multi-label: the summed 2x2 matrices
        names = ["no", "yes"]
    else:
        names = report["labels"]
    size = max(4.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_title(f"accuracy {report['accuracy']:.4f}")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path
