"""Models as files: specs and TOML model files, the zoo, run folders and checkpoints, PyTorch
weights and ONNX. Stands on the engine (`convnet.core`, `convnet.nn`) and nothing above it."""
