"""Exceptions raised by textcnn.

Each inherits from the builtin it resembles, so ``except ValueError`` keeps working for callers who
do not know textcnn's own classes (the scikit-learn and skorch habit).
"""

from __future__ import annotations


class TextCNNError(Exception):
    """Base class of every error textcnn raises on purpose."""


class ConfigError(TextCNNError, ValueError):
    """A parameter has a value outside its allowed range, or an unknown name."""


class DataFormatError(TextCNNError, ValueError):
    """Input data cannot be read: missing file or column, bad bytes, empty text, missing label."""


class NotFittedError(TextCNNError, ValueError, AttributeError):
    """A classifier was asked to predict before ``fit`` or ``load``."""


class TrainingError(TextCNNError, RuntimeError):
    """Training cannot go on: the loss or a dev metric became NaN or infinite."""


class ModelFormatError(TextCNNError, ValueError):
    """A model directory is missing a file, is damaged, or comes from a newer format."""


class MissingDependencyError(TextCNNError, ImportError):
    """An optional dependency is needed; the message names the ``pip install`` command."""


def missing_dependency(package: str, extra: str, purpose: str) -> MissingDependencyError:
    """Builds the error for an optional import that failed, with the install hint."""
    return MissingDependencyError(
        f"{purpose} needs the package '{package}', which is not installed. "
        f"Install it with: pip install 'textcnn[{extra}]'"
    )
