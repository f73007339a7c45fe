"""The translators, one small function per ONNX operator, grouped by family. Importing this
package fills `convnet.io.onnx.registry.REGISTRY`."""

from convnet.io.onnx.ops import (  # noqa: F401
    arithmetic,
    elementwise,
    linear,
    normalization,
    reduce,
    resample,
    tensor,
    windows,
)
