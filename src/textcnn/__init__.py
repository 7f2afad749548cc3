"""textcnn: a fast, explainable convolutional text classifier (Kim 2014) for your own data."""

__version__ = "0.1.0"

from .classifier import TextCNNClassifier, load  # noqa: E402
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
from .model import TextCNN  # noqa: E402

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
