"""The floor everything stands on: the array module and its worker threads, the compiled
kernel, the window arithmetic, errors, the seeded generator, loop oracles and file helpers.
Nothing here imports any other part of convnet."""
