"""PyTorch weights in and out: the state dict of the equivalent torch.nn.Sequential.

convnet's state-dict keys are PyTorch's for the same stack of layers ('0.weight',
'1.running_mean', '3.body.0.weight' for a Residual module with `body` and `projection`
attributes), and the arrays share PyTorch's layouts (conv weight (K, C/groups, KH, KW), linear
weight (out, in)). So weights copy across by name, checked for missing keys, extra keys and
shapes before anything is written into the model.

    load_torch_weights(model, "resnet8.safetensors")   # or .pt / .pth, or a state dict
    save_torch_weights(model, "resnet8.safetensors")   # safetensors.torch.load_file reads it

`.safetensors` files need only the safetensors package; `.pt`/`.pth`/`.bin` files need PyTorch
and are read with `torch.load(..., weights_only=True)`, which runs no pickled code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy

from convnet.core.backend import to_numpy
from convnet.nn.layer import Layer

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
# Training checkpoints often wrap the state dict; these wrappers are unwrapped when alone.
WRAPPER_KEYS = ("state_dict", "model_state_dict")
# Buffers that do not change what the model computes: a file may leave them out.
OPTIONAL_SUFFIXES = (".num_batches_tracked",)


class WeightsError(ValueError):
    """A state dict that does not fit the model; the message lists what differs."""


def _torch(purpose: str):
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs PyTorch, which is not installed; install it (pip install torch) "
            f"or use a .safetensors file, which needs only the safetensors package"
        ) from error
    return torch


def _tensor_to_numpy(value) -> numpy.ndarray:
    """A torch tensor (any device, float16/bfloat16 widened) or array-like as NumPy."""
    if type(value).__module__.startswith("torch"):
        value = value.detach().cpu()
        if value.is_floating_point() and value.element_size() < 4:  # float16, bfloat16
            value = value.float()
        return value.numpy()
    return numpy.asarray(to_numpy(value))


def read_state_dict(source) -> dict[str, numpy.ndarray]:
    """Name -> NumPy array from a .safetensors/.pt/.pth/.bin path or a state dict."""
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"no weights file at {path}")
        suffix = path.suffix.lower()
        if suffix in SAFETENSORS_SUFFIXES:
            state = _read_safetensors(path)
        elif suffix in TORCH_SUFFIXES:
            torch = _torch(f"reading {path.name}")
            state = _torch_load(torch, path)
            if not isinstance(state, Mapping):
                raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict; "
                                   f"save model.state_dict() rather than the model")
            state = dict(state)
        else:
            raise WeightsError(
                f"{path.name}: unknown weights format {suffix or '(no suffix)'}; expected "
                f"{', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}")
    state = _unwrap(state)
    arrays = {}
    for key, value in state.items():
        if isinstance(value, Mapping):
            raise WeightsError(f"entry '{key}' is a nested dict, not a tensor; pass the model's "
                               f"state dict itself")
        arrays[str(key)] = _tensor_to_numpy(value)
    return arrays


def _torch_load(torch, path: Path):
    """torch.load(weights_only=True), its refusals as one WeightsError. Its own message advises
    weights_only=False, which would run the file's pickled code: never passed on."""
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: the file is empty; expected a PyTorch state dict saved with "
                           f"torch.save(model.state_dict(), ...)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle, zip and torch errors alike
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = "it holds something other than tensors" if "weights_only" in str(error) \
            else (first or type(error).__name__)
        raise WeightsError(f"{path}: not a PyTorch weights file convnet can read ({reason}); "
                           f"expected a state dict saved with torch.save(model.state_dict(), "
                           f"...), or a .safetensors file") from None


def _read_safetensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (TypeError, ValueError) as error:  # bfloat16 has no NumPy dtype
        try:
            import torch  # noqa: F401 - only to read dtypes NumPy lacks
        except ImportError:
            raise WeightsError(f"{path.name}: {error}; convert the file to float32, or install "
                               f"PyTorch to read it") from error
        from safetensors.torch import load_file as load_torch_file

        return load_torch_file(str(path))


def _unwrap(state: dict) -> dict:
    """{'state_dict': {...}} (and 'model_state_dict') from training checkpoints -> {...}."""
    for key in WRAPPER_KEYS:
        inner = state.get(key)
        if isinstance(inner, Mapping) and not any(
                hasattr(value, "shape") for value in state.values()):
            return dict(inner)
    return state


def _mismatch_message(model: Layer, missing, unexpected, shapes) -> str:
    parts = []
    if missing:
        parts.append(f"missing from the file: {', '.join(missing)}")
    if unexpected:
        parts.append(f"not in the model: {', '.join(unexpected)}")
    for key, (expected, received) in shapes.items():
        hint = ""
        if len(expected) == 2 and tuple(reversed(expected)) == received:
            hint = " (transposed? PyTorch Linear weights are (out_features, in_features))"
        parts.append(f"'{key}': the model has shape {expected}, the file {received}{hint}")
    prefixes = {key.split(".", 1)[0] for key in unexpected if "." in key}
    advice = "build the convnet model with the same layers in the same order"
    if missing and unexpected and len(prefixes) == 1 and not next(iter(prefixes)).isdigit():
        prefix = next(iter(prefixes))
        advice = (f"the file's keys start with '{prefix}.': strip it, e.g. "
                  f"{{k.removeprefix('{prefix}.'): v for k, v in state.items()}}")
    return (f"the weights do not fit {type(model).__name__} ({model.num_parameters():,} "
            f"parameters): " + "; ".join(parts) + f". To fix: {advice}")


def load_torch_weights(model: Layer, source, *, strict: bool = True) -> Layer:
    """Copy PyTorch weights into `model` by state-dict key; returns the model.

    `source` is a .safetensors/.pt/.pth/.bin path or a state dict (torch tensors or arrays).
    With strict=True every model key must be present (num_batches_tracked may be left out)
    and no extra keys given; shapes must always match. Nothing is written unless all fit.
    """
    state = read_state_dict(source)
    expected = {key: tuple(numpy.shape(value)) for key, value in model.state_dict().items()}
    missing = [key for key in expected if key not in state
               and not key.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [key for key in state if key not in expected]
    shapes = {key: (expected[key], tuple(state[key].shape)) for key in expected
              if key in state and tuple(state[key].shape) != expected[key]}
    if shapes or (strict and (missing or unexpected)):
        raise WeightsError(_mismatch_message(model, missing if strict else [],
                                             unexpected if strict else [], shapes))
    kinds = {key: numpy.asarray(value).dtype.kind for key, value in model.state_dict().items()}
    for key, value in state.items():
        if key in kinds and kinds[key] == "f" and value.dtype.kind not in "fiu":
            raise WeightsError(f"'{key}': expected floating-point values, received {value.dtype}")
    model.load_state_dict({key: value for key, value in state.items() if key in expected},
                          strict=False)
    return model


def save_torch_weights(model: Layer, path) -> Path:
    """Write the model's state dict for PyTorch: .safetensors (safetensors.torch.load_file
    reads it) or .pt/.pth (torch.load, needs PyTorch). Returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    state = {key: numpy.array(to_numpy(value), order="C")
             for key, value in model.state_dict().items()}
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.numpy import save_file

        save_file(state, str(path), metadata={"format": "pt"})
    elif suffix in TORCH_SUFFIXES:
        torch = _torch(f"writing {path.name}")
        torch.save({key: torch.from_numpy(value) for key, value in state.items()}, path)
    else:
        raise WeightsError(f"{path.name}: unknown weights format {suffix or '(no suffix)'}; "
                           f"expected {', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}")
    return path
