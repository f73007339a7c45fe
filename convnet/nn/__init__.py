"""Layers and models: each layer's forward and backward side by side, the containers and the
graph model that order their calls, losses and the summary. Imports only `convnet.core`."""
