"""Model files: a user's own network in TOML, validated layer by layer before any data flows.

    name = "my-net"
    description = "two conv blocks for 28x28 digits"
    input_shape = [1, 28, 28]        # C, H, W
    strict = true                    # refuse windows that do not fit (default)

    [[layers]]
    type = "conv"                    # in_channels is taken from the input
    out_channels = 8
    kernel_size = 5
    padding = 2

    [[layers]]
    type = "relu"

    [[layers]]
    type = "maxpool"
    kernel_size = 2

    [[layers]]
    type = "flatten"

    [[layers]]
    type = "linear"                  # in_features is taken from the input
    out_features = 10

A graph names its layers and says what each reads (the default: the layer before):

    [[layers]]
    type = "conv"
    name = "branch1"
    out_channels = 16
    kernel_size = 1
    inputs = ["input"]

    [[layers]]
    type = "concat"
    inputs = ["branch1", "branch3"]

Errors name the file, the line of the layer's [[layers]] header, and the engine's message.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from convnet.io.checkpoint import is_input_shape
from convnet.io.spec import SpecError, build

_LAYER_HEADER = re.compile(r"^\s*\[\[\s*layers\s*\]\]")


class ModelFileError(ValueError):
    """A model file that cannot be read or built; the message starts with file:line."""


def layer_line(text: str, index: int) -> int | None:
    """1-based line of the index-th top-level [[layers]] header, if the file uses them."""
    headers = [number for number, line in enumerate(text.splitlines(), start=1)
               if _LAYER_HEADER.match(line)]
    return headers[index] if index < len(headers) else None


def load_spec(path) -> dict:
    """The validated spec of a TOML model file (a ModelFileError says what and where)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read the model file ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise ModelFileError(f"{path}: not a text file in UTF-8 (byte {error.start} is "
                             f"{error.object[error.start:error.start + 1].hex()}); save it as "
                             f"UTF-8 TOML") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ModelFileError(f"{path}: not valid TOML: {error}") from None
    except RecursionError:
        raise ModelFileError(f"{path}: nested too deeply for the TOML reader (arrays or tables "
                             f"inside each other a few hundred levels deep)") from None
    unknown = sorted(set(data) - {"name", "description", "input_shape", "inputs", "outputs",
                                  "strict", "layers"})
    if unknown:
        raise ModelFileError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; expected "
                             f"name, description, input_shape (or inputs), outputs, strict and "
                             f"[[layers]]")
    spec = {"name": data.get("name", path.stem), "description": data.get("description", ""),
            "strict": data.get("strict", True), "layers": data.get("layers")}
    for key in ("input_shape", "inputs", "outputs"):
        if key in data:
            spec[key] = data[key]
    if "input_shape" not in spec and "inputs" not in spec:
        raise ModelFileError(f"{path}: missing input_shape = [C, H, W] (e.g. [1, 28, 28])")
    if not is_input_shape(spec["input_shape"]):
        raise ModelFileError(f"{path}: input_shape must be [C, H, W] of positive integers "
                             f"(e.g. [1, 28, 28]), received {spec['input_shape']!r}")
    try:
        build(spec)
    except SpecError as error:
        index = error.layer_index
        if index is None:
            raise ModelFileError(f"{path}: {error}") from None
        line = layer_line(text, index)
        where = f"{path}:{line}" if line else str(path)
        kind = spec["layers"][index].get("type", "?") if isinstance(
            spec["layers"][index], dict) else "?"
        raise ModelFileError(f"{where}: layer {index + 1} ({kind}): {error}") from None
    return spec


def load(path):
    """A freshly initialised Sequential from a TOML model file."""
    return build(load_spec(path))


def spec_to_toml(spec: dict) -> str:
    """A model spec as a TOML model file (what `convnet train --model FILE` reads)."""
    lines = []
    for key in ("name", "description"):
        if spec.get(key):
            lines.append(f"{key} = {_toml_value(spec[key])}")
    for key in ("input_shape", "inputs", "outputs"):
        if key in spec:
            lines.append(f"{key} = {_toml_value(spec[key])}")
    lines.append(f"strict = {_toml_value(bool(spec.get('strict', True)))}")
    for entry in spec["layers"]:
        lines.append("")
        lines.append("[[layers]]")
        for key, value in entry.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the names used here
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + items + "}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")
