"""The one version of convnet: `convnet --version`, `cn.__version__` and the package metadata."""

__version__ = "0.1.0"
