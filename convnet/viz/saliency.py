"""Why this class? Saliency (the gradient of the class score with respect to the input pixels)
and Grad-CAM (a conv layer's maps weighted by the class score's average gradient on them).

Both run backward through the model, so they use its caches: call them on a model that is not
being trained at the same moment (a copy, or under a lock). Parameter gradients are left as
they were found.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from convnet.nn.conv import Conv2d
from convnet.nn.graph import first_output, first_output_gradient, first_output_shape
from convnet.nn.layer import grad_enabled
from convnet.nn.pooling import GlobalAvgPool2d
from convnet.nn.window import WindowLayer
from convnet.viz.images import rescale, resize_bilinear
from convnet.viz.probe import (
    activation_and_gradient,
    evaluating,
    layer_index,
    stage_shapes,
    stages,
)


@contextlib.contextmanager
def preserved_gradients(model):
    """Restore every parameter's gradient on exit: explanations must not leak into training."""
    saved = [(param, param.grad.copy()) for param in model.parameters()]
    try:
        yield
    finally:
        for param, grad in saved:
            param.grad[...] = grad


def _check_input(model, x, class_index: int) -> int:
    if not grad_enabled():
        raise RuntimeError("saliency and Grad-CAM need backward: call them outside no_grad()")
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one preprocessed image of shape (1, C, H, W), received "
                         f"{x.shape}")
    classes = first_output_shape(model, tuple(x.shape[1:]))[0]
    if not 0 <= int(class_index) < classes:
        raise ValueError(f"class_index must be in [0, {classes - 1}], received {class_index}")
    return classes


def _one_hot(scores, class_index: int):
    dy = np.zeros_like(scores)
    dy[:, int(class_index)] = 1
    return dy


def class_gradient(model, x, class_index: int) -> np.ndarray:
    """d score[class_index] / d x for one input x (1, C, H, W), in evaluation mode."""
    _check_input(model, x, class_index)
    with evaluating(model), preserved_gradients(model):
        scores = first_output(model.forward(x))
        return model.backward(first_output_gradient(model, _one_hot(scores, class_index)))


def saliency_map(model, x, class_index: int) -> np.ndarray:
    """(H, W): the largest |gradient| over the channels of each pixel (Simonyan et al. 2014)."""
    return np.abs(class_gradient(model, x, class_index)[0]).max(axis=0)


def default_cam_layer(model, input_shape) -> str:
    """The last top-level layer (graph node) with maps larger than 1x1 that is not a pooling
    layer: the last conv's output after its nonlinearity in most networks (relu2 in LeNet-5)."""
    chosen = fallback = None
    for (name, layer), shape in zip(stages(model), stage_shapes(model, input_shape),
                                    strict=True):
        if len(shape) != 3:
            continue
        fallback = name
        if shape[1] * shape[2] > 1 and not isinstance(layer, WindowLayer | GlobalAvgPool2d) \
                or isinstance(layer, Conv2d):
            chosen = name
    if fallback is None:
        raise ValueError("Grad-CAM needs a layer with activation maps (C, H, W); this model "
                         "has none at the top level")
    return chosen or fallback


@dataclass
class GradCam:
    layer: str
    cam: np.ndarray  # (h, w) >= 0 at the layer's resolution
    class_index: int

    def on_input(self, size: tuple[int, int]) -> np.ndarray:
        """The map resized (bilinear) to the input's (H, W) and scaled to [0, 1]."""
        big = resize_bilinear(self.cam, size)
        top = big.max()
        return (big / top).astype(np.float32) if top > 0 else np.zeros(size, np.float32)


def grad_cam(model, x, class_index: int, layer: str | None = None) -> GradCam:
    """Grad-CAM (Selvaraju et al. 2017) for a top-level layer (a graph's node) with (C, h, w)
    output: ReLU(sum_k alpha_k A_k), alpha_k = mean over positions of d score / d A_k."""
    _check_input(model, x, class_index)
    name = layer or default_cam_layer(model, x.shape[1:])
    with evaluating(model), preserved_gradients(model):
        index = layer_index(model, name)
        shape = stage_shapes(model, x.shape[1:])[index]
        if len(shape) != 3:
            raise ValueError(f"{name} outputs shape {shape}, not maps (C, H, W); "
                             f"choose a conv, pool or activation layer before Flatten")
        activation, grad = activation_and_gradient(
            model, x, name, lambda scores: _one_hot(scores, class_index))
    weights = np.asarray(grad[0], dtype=np.float64).mean(axis=(1, 2))  # K
    cam = np.tensordot(weights, np.asarray(activation[0], dtype=np.float64), axes=1)  # h, w
    return GradCam(name, np.maximum(cam, 0), int(class_index))


def explanation_figure(image, saliency: np.ndarray, cam: GradCam, class_name: str):
    """Input, saliency and Grad-CAM overlay side by side."""
    from convnet.viz.figures import new_figure
    from convnet.viz.images import image_hwc, overlay

    fig = new_figure(7.5, 2.8)
    axes = fig.subplots(1, 3)
    picture = image_hwc(image)
    axes[0].imshow(picture, cmap="gray" if picture.ndim == 2 else None, interpolation="nearest")
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(rescale(saliency), cmap="hot", interpolation="nearest")
    axes[1].set_title(f"saliency for '{class_name}'\nblack 0 to white {saliency.max():.3g}",
                      fontsize=9)
    axes[2].imshow(overlay(image, cam.on_input(image.shape[1:])), interpolation="nearest")
    axes[2].set_title(f"Grad-CAM at {cam.layer}\nblue 0 to red 1 (relative)", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    return fig
