"""textcnn: a fast, explainable convolutional text classifier (Kim 2014) for your own data.

The names that need PyTorch (``TextCNNClassifier``, ``TextCNN``, ``load``) are imported on first use
(PEP 562), so ``import textcnn.runtime`` works in an environment without PyTorch.
"""

__version__ = "0.1.0"

from .config import TextCNNConfig  # noqa: E402
from .data import Records, read_records  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    DataFormatError,
    MissingDependencyError,
    ModelFormatError,
    NotFittedError,
    TextCNNError,
    TrainingError,
)

# name -> (module, attribute): imported with PyTorch on first access
_NEEDS_TORCH = {
    "TextCNNClassifier": ("classifier", "TextCNNClassifier"),
    "TextCNN": ("model", "TextCNN"),
    "load": ("classifier", "load"),
}


def __getattr__(name: str):
    if name not in _NEEDS_TORCH:
        raise AttributeError(f"module 'textcnn' has no attribute {name!r}")
    import importlib

    module, attribute = _NEEDS_TORCH[name]
    try:
        value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    except ImportError as e:
        if e.name not in ("torch", "safetensors", "numba"):
            raise
        raise MissingDependencyError(
            f"textcnn.{name} needs PyTorch (the package '{e.name}' is not installed). Install it with: "
            "pip install 'textcnn[train]' (CPU only: pip install torch --index-url "
            "https://download.pytorch.org/whl/cpu first), or predict with an exported model through "
            "textcnn.runtime, which needs only 'textcnn[runtime]'."
        ) from e
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_NEEDS_TORCH])


__all__ = [
    "TextCNNClassifier",
    "TextCNNConfig",
    "TextCNN",
    "load",
    "read_records",
    "Records",
    "TextCNNError",
    "ConfigError",
    "DataFormatError",
    "ModelFormatError",
    "NotFittedError",
    "TrainingError",
    "MissingDependencyError",
    "__version__",
]
