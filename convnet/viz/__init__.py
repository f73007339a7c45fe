"""Pictures of a network: filters, activation maps, training curves, confusion matrix, worst
mistakes, saliency and Grad-CAM, top-activating images, and the HTML report.

Functions return arrays or matplotlib Figures (drawn with Agg, never shown); the CLI
(`convnet visualize`, `convnet report`) writes them as PNG and HTML.

    from convnet.viz import filter_grid, layer_outputs, saliency_map, grad_cam, write_report
"""

from convnet.viz.activations import activation_grid, activations_figure
from convnet.viz.confusion import confusion_figure
from convnet.viz.curves import curves_figure, read_metrics
from convnet.viz.figures import figure_png, save_figure
from convnet.viz.filters import filter_grid, filter_tiles, filters_figure
from convnet.viz.images import rescale, tile_grid
from convnet.viz.mistakes import Mistake, mistakes_figure, worst_mistakes
from convnet.viz.probe import LayerOutput, class_probabilities, conv_layers, layer_outputs
from convnet.viz.report import ReportCallback, write_report
from convnet.viz.saliency import GradCam, class_gradient, grad_cam, saliency_map
from convnet.viz.top_images import filter_strengths, top_activating

__all__ = [
    "GradCam", "LayerOutput", "Mistake", "ReportCallback", "activation_grid",
    "activations_figure", "class_gradient", "class_probabilities", "confusion_figure",
    "conv_layers", "curves_figure", "figure_png", "filter_grid", "filter_strengths",
    "filter_tiles", "filters_figure", "grad_cam", "layer_outputs", "mistakes_figure",
    "read_metrics", "rescale", "saliency_map", "save_figure", "tile_grid", "top_activating",
    "worst_mistakes", "write_report",
]
