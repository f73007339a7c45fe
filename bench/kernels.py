"""The compiled direct convolution against im2col + BLAS and PyTorch, layer by layer.

    python -m bench.kernels                 # the reference networks' stride-1 conv layers
    python -m bench.kernels --threads 2 --reps 25

For each layer shape, three versions run back to back in every repetition (so that a machine
whose speed drifts treats them alike): convnet with the compiled kernel, convnet with it
switched off (NumPy im2col + BLAS), and PyTorch's Conv2d, each in training (forward, then
backward with the input gradient) and in inference (forward under no_grad). Reported: each
version's median time and the median of the per-repetition ratios. This is the measurement
behind the rule in `convnet.core.kernels.worth_compiling`; for layers outside it, "kernel" runs
whichever of the two correlations (forward, input gradient) falls inside.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

# (in_channels, out_channels, image size, kernel, padding): the stride-1 conv layers of the
# reference networks (convnetjs, lenet5, bottleneck, vggish).
LAYERS = [(3, 16, 32, 5, 2), (16, 20, 16, 5, 2), (20, 20, 8, 5, 2), (1, 6, 28, 5, 2),
          (6, 16, 14, 5, 0), (8, 8, 16, 3, 1), (16, 16, 8, 3, 1), (3, 32, 32, 3, 1),
          (32, 32, 32, 3, 1), (32, 64, 16, 3, 1), (64, 64, 16, 3, 1), (64, 128, 8, 3, 1)]


def compare(layer_shape, batch: int, reps: int, rng) -> dict:
    import torch

    import convnet as cn
    from convnet.core import kernels

    c_in, c_out, size, kernel, padding = layer_shape
    conv = cn.Conv2d(c_in, c_out, kernel, padding=padding)
    x = rng.standard_normal((batch, c_in, size, size)).astype(np.float32)
    out_size = size + 2 * padding - kernel + 1
    dy = rng.standard_normal((batch, c_out, out_size, out_size)).astype(np.float32)
    twin = torch.nn.Conv2d(c_in, c_out, kernel, padding=padding)
    tx, tdy = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)

    def ours(enabled: bool, train: bool):
        kernels.set_enabled(enabled)
        if train:
            conv.forward(x)
            conv.backward(dy)
        else:
            with cn.no_grad():
                conv.forward(x)

    def theirs(train: bool):
        if train:
            twin(tx).backward(tdy)
        else:
            with torch.no_grad():
                twin(tx)

    result = {"layer": list(layer_shape)}
    try:
        for task in ("train", "infer"):
            train = task == "train"
            runs = {"kernel": lambda train=train: ours(True, train),
                    "numpy": lambda train=train: ours(False, train),
                    "torch": lambda train=train: theirs(train)}
            seconds = {name: [] for name in runs}
            for rep in range(reps + 1):
                for name, run in runs.items():
                    start = time.perf_counter()
                    run()
                    if rep:  # the first repetition warms up
                        seconds[name].append(time.perf_counter() - start)
            times = {name: np.array(values) for name, values in seconds.items()}
            result[task] = {
                **{f"{name}_ms": float(np.median(values) * 1e3) for name, values in times.items()},
                "kernel_over_numpy": float(np.median(times["numpy"] / times["kernel"])),
                "kernel_over_torch": float(np.median(times["torch"] / times["kernel"])),
                "numpy_over_torch": float(np.median(times["torch"] / times["numpy"])),
            }
    finally:
        kernels.set_enabled(True)
    return result


def format_rows(results: list[dict], threads: int, batch: int) -> str:
    from convnet.core import kernels

    lines = [f"bench.kernels: {threads} thread(s), batch {batch}; speed-up = median over "
             f"repetitions of (time of the other) / (time of this); the kernel is used for "
             f"{kernels.MIN_FILTERS} to {kernels.MAX_FILTERS} output channels, or up to "
             f"{kernels.WIDE_MAX_FILTERS} on 16-column tiles with at least "
             f"{kernels.WIDE_MIN_TAPS} taps per output",
             f"{'layer (C->K, size, kernel/pad)':<32}{'task':<7}{'kernel ms':>10}{'numpy ms':>10}"
             f"{'torch ms':>10}{'kernel/numpy':>14}{'kernel/torch':>14}{'numpy/torch':>13}"]
    for result in results:
        c_in, c_out, size, kernel, padding = result["layer"]
        label = f"{c_in}->{c_out}, {size}x{size}, {kernel}x{kernel}/{padding}"
        for task in ("train", "infer"):
            row = result[task]
            lines.append(f"{label if task == 'train' else '':<32}{task:<7}"
                         f"{row['kernel_ms']:>10.1f}{row['numpy_ms']:>10.1f}"
                         f"{row['torch_ms']:>10.1f}{row['kernel_over_numpy']:>14.2f}"
                         f"{row['kernel_over_torch']:>14.2f}{row['numpy_over_torch']:>13.2f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args(argv)

    import torch

    from convnet.core import backend

    backend.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    results = [compare(shape, args.batch, args.reps, rng) for shape in LAYERS]
    print(format_rows(results, args.threads, args.batch))


if __name__ == "__main__":
    main()
