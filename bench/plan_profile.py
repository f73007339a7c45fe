"""Where inference time goes: each step of convnet's inference plan beside onnxruntime's nodes.

    python -m bench.plan_profile bottleneck            # batch 128, one thread
    python -m bench.plan_profile vggish resnet8 --batch 1 --repeats 50
    python -m bench.plan_profile resnet8 --threads 2   # both systems on two threads

For each network (a zoo model with its initial weights), convnet's plan is built and warmed
up, then every step of a runner is timed on its own, summed over the pieces of the batch (the
best of --repeats runs of that step): a piece for each thread, every step split between them,
so that each step's time is that of the threads together (the plan itself runs a large batch
in lanes, each whole on one thread: the same kernels on pieces of the same size). onnxruntime
runs convnet's own ONNX export of the same weights with its profiler on and each node's best
time is kept. Both with --threads threads (one unless told; OMP_NUM_THREADS is set to match
for NumPy's BLAS).
The sums are not end-to-end times (each part's best is taken apart), but they compare like
with like; `python -m bench.run` measures whole networks.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def plan_steps(model, x, repeats: int) -> list[tuple[str, float]]:
    """(step description, best seconds) for every step of the model's plan for x: a piece of
    the batch for each thread at a time (`Plan.piece`), each step split between the threads
    and its time summed over the pieces."""
    import convnet as cn
    from convnet.core.backend import num_threads
    from convnet.nn import inference

    with cn.no_grad():
        for _ in range(3):
            model.forward(x)
    plan = next(iter(model.__dict__["_inference_plans"].values()))
    threads = num_threads()
    piece = min(len(x), plan.piece * threads)
    runner = inference.Runner(plan, piece, threads)
    pieces = [x[b : b + piece] for b in range(0, len(x) - piece + 1, piece)]  # whole pieces
    best = np.full(len(runner.bounds), np.inf)
    for _ in range(repeats):
        total = np.zeros(len(runner.bounds))
        for part in pieces:
            values: list = [None] * plan.graph.values
            values[plan.graph.inputs[0]] = part
            for index, bound in enumerate(runner.bounds):  # each step alone, not in segments
                start = time.perf_counter()
                bound(values)
                total[index] += time.perf_counter() - start
        best = np.minimum(best, total * len(x) / (piece * len(pieces)))
    rows = []
    for step, seconds in zip(plan.steps, best, strict=True):
        layer = getattr(step, "conv", None) or getattr(step, "layer", None)
        what = type(step).__name__ + (f" {layer!r}" if layer is not None else "")
        if getattr(step, "pool", False):
            what += " + MaxPool2d(kernel_size=2)"
        if hasattr(step, "tile"):
            what += f" tile {step.tile}"
        if getattr(step, "macs", 0):
            what += f", {2 * step.macs * x.shape[0] / seconds / 1e9:.0f} GFLOP/s"
        rows.append((what, float(seconds)))
    return rows


def onnxruntime_nodes(model, x, repeats: int, threads: int = 1) -> list[tuple[str, float]]:
    """(node name and operator, best seconds) from onnxruntime's profiler on `threads`."""
    import onnxruntime

    import convnet as cn

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        cn.onnx.export(model, path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(repeats + 3):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[tuple, list] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            key = (event["name"].removesuffix("_kernel_time"), event["args"].get("op_name"))
            times[key].append(event["dur"] / 1e6)
    return [(f"{name} ({op})", min(values)) for (name, op), values in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*", default=["bottleneck"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from convnet.core import backend
    from convnet.io import zoo
    from convnet.nn import inference

    backend.set_num_threads(args.threads)
    # A small batch of a small network would take the NumPy layers until something larger has
    # loaded the compiled kernels (as a batch of 128 does in `bench.run` before its batch-1
    # latency): profile the plan it then runs.
    inference.MIN_LOAD_MACS = 0
    print(f"bench.plan_profile: batch {args.batch}, {args.threads} thread(s), best of "
          f"{args.repeats}; "
          f"load average {os.getloadavg()[0]:.2f}")
    for name in args.networks:
        model = zoo.build_model(name).eval()
        x = np.random.default_rng(0).random((args.batch, *model.input_shape), dtype=np.float32)
        ours = plan_steps(model, x, args.repeats)
        theirs = onnxruntime_nodes(model, x, args.repeats, args.threads)
        total, other = sum(t for _, t in ours), sum(t for _, t in theirs)
        print(f"\n{name}: convnet {total * 1e3:.2f} ms, onnxruntime {other * 1e3:.2f} ms "
              f"(onnxruntime / convnet {other / total:.2f})")
        print("  convnet's plan steps:")
        for what, seconds in ours:
            print(f"    {seconds * 1e3:8.3f} ms  {what}")
        print("  onnxruntime's nodes:")
        for what, seconds in theirs:
            print(f"    {seconds * 1e3:8.3f} ms  {what}")


if __name__ == "__main__":
    main()
