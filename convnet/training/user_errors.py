"""The errors that are the user's to fix, reported by the CLI and the web page in one line."""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: reported in one line, exit 1, no traceback."""
    from convnet.core.errors import ShapeError
    from convnet.data import DataError
    from convnet.io.checkpoint import CheckpointError
    from convnet.io.modelfile import ModelFileError
    from convnet.io.onnx import OnnxImportError
    from convnet.io.spec import SpecError
    from convnet.io.torch_weights import WeightsError
    from convnet.training.trainer import TrainingError

    return (CheckpointError, ShapeError, ModelFileError, SpecError, TrainingError,
            FileNotFoundError, PermissionError, DataError, OnnxImportError, WeightsError)
