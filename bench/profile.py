"""Where a training step's time goes, layer by layer and by kind of work.

    python -m bench.profile vggish            # batch 128, one worker thread
    python -m bench.profile lenet5 --batch 32 --threads 2
    python -m bench.profile convnetjs --torch  # each layer beside its PyTorch twin

Each layer's forward and backward is timed on its own; inside convolutions the im2col copies
(padding included), the col2im scatter and the compiled direct convolution are timed apart
from the rest (the matrix products, bias and layout copies). Kinds: im2col, matmul (conv and
linear products), direct (convnet.core.kernels), col2im, pooling,
elementwise (activations, flatten, residual additions, batch norm), loss, optimizer, and Python
overhead: the step's time that no timed region accounts for. With more than one worker thread,
regions inside a conv overlap and are summed over threads, so profile with one thread.
--clock cpu counts the calling thread's CPU time instead of wall time: on a machine shared
with other work it leaves out the time spent waiting for a core. --torch times each top-level
layer's forward+backward beside the same layer in PyTorch (same weights, same input, same
thread count; the first layer skips its input gradient in both), median of --steps runs.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import defaultdict

import numpy as np

# Between the two systems' runs: PyTorch's OpenMP threads spin a while after each call and,
# without the pause, take the second core from convnet's next run (on two threads convnet's
# layers read up to 2x slower). After the pause each system runs once untimed (a first call
# after sleeping read 10 ms for PyTorch's smallest layers).
PAUSE_SECONDS = 0.05

# A layer's passes that are timed; an activation taken into the layer before it (a ReLU
# into batch norm's forward and backward or a convolution's backward: forward_activated,
# backward_activated) is timed with that layer.
PHASES = ("forward", "backward", "backward_parameters", "forward_activated",
          "backward_activated")

KINDS = ["im2col", "matmul", "direct", "col2im", "pooling", "elementwise", "loss", "optimizer",
         "python"]


def _kind(layer) -> str:
    import convnet as cn

    if isinstance(layer, (cn.Conv2d, cn.Linear)):
        return "matmul"
    if isinstance(layer, (cn.MaxPool2d, cn.AvgPool2d, cn.GlobalAvgPool2d)):
        return "pooling"
    return "elementwise"


class Profiler:
    """Times every leaf layer's forward/backward and the conv helpers, by monkeypatching."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.layer_time: dict[tuple[str, str], float] = defaultdict(float)
        self.kind_time: dict[str, float] = defaultdict(float)
        self.helper_time: dict[str, float] = defaultdict(float)  # inside the current layer

    def _timed(self, fn, key):
        def wrapper(*args, **kwargs):
            start = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.helper_time[key] += self.clock() - start
        return wrapper

    @contextlib.contextmanager
    def patched(self, model):
        """Wrap the leaf layers of `model`, convnet.nn.conv's im2col/col2im and the compiled
        direct convolution while inside."""
        from convnet.core import kernels
        from convnet.nn import conv

        originals = {"im2col": conv.im2col, "col2im": conv.col2im,
                     "direct": kernels.conv_forward}
        conv.im2col = self._timed(originals["im2col"], "im2col")
        conv.col2im = self._timed(originals["col2im"], "col2im")
        kernels.conv_forward = self._timed(originals["direct"], "direct")
        leaves = [m for m in model.modules() if not m.children()]
        try:
            for layer in leaves:
                for phase in PHASES:
                    if hasattr(layer, phase):
                        setattr(layer, phase,
                                self._layer_timer(layer, phase, getattr(layer, phase)))
            yield self
        finally:
            conv.im2col, conv.col2im = originals["im2col"], originals["col2im"]
            kernels.conv_forward = originals["direct"]
            for layer in leaves:
                for phase in PHASES:
                    if phase in vars(layer):
                        delattr(layer, phase)

    def _layer_timer(self, layer, phase, fn):
        label = "forward" if phase.startswith("forward") else "backward"

        def wrapper(*args, **kwargs):
            if getattr(self, "_inside", False):  # backward_parameters calling backward
                return fn(*args, **kwargs)
            self._inside = True
            self.helper_time.clear()
            start = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = self.clock() - start
                self._inside = False
                self.layer_time[(layer.name, label)] += elapsed
                helpers = 0.0
                for key, value in self.helper_time.items():
                    self.kind_time[key] += value
                    helpers += value
                self.kind_time[_kind(layer)] += elapsed - helpers
        return wrapper


def profile_training(name: str, batch: int = 128, steps: int = 5, threads: int = 1,
                     clock: str = "wall") -> dict:
    """Mean seconds per training step by layer and by kind, for zoo network `name`."""
    import convnet as cn
    from convnet.core import backend
    from convnet.io import zoo

    backend.set_num_threads(threads)
    cn.manual_seed(0)
    model = zoo.build_model(name)  # a chain or a graph: its leaf layers are timed
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *zoo.MODELS[name].input_shape)).astype(np.float32)
    out_shape = model.output_shape(zoo.MODELS[name].input_shape)  # a class, or one a pixel
    y = rng.integers(0, 10, (batch, *out_shape[1:]))
    loss_fn = cn.CrossEntropyLoss()
    optimizer = cn.SGD(model.parameters(), lr=0.01, momentum=0.9)
    profiler = Profiler(time.thread_time if clock == "cpu" else time.perf_counter)
    total = 0.0
    with profiler.patched(model):
        for step in range(steps + 1):
            if step == 1:  # the first step warms up; start counting afresh
                profiler.layer_time.clear()
                profiler.kind_time.clear()
                total = 0.0
            start = profiler.clock()
            scores = model.forward(x)
            mark = profiler.clock()
            loss_fn.forward(scores, y)
            dscores = loss_fn.backward()
            profiler.kind_time["loss"] += profiler.clock() - mark
            model.backward(dscores, input_grad=False)
            mark = profiler.clock()
            optimizer.step()
            model.zero_grad()
            profiler.kind_time["optimizer"] += profiler.clock() - mark
            total += profiler.clock() - start
    kinds = {kind: profiler.kind_time.get(kind, 0.0) / steps for kind in KINDS if kind != "python"}
    kinds["python"] = max(total / steps - sum(kinds.values()), 0.0)
    layers = [{"layer": layer, "phase": phase, "seconds": seconds / steps}
              for (layer, phase), seconds in profiler.layer_time.items()]
    return {"network": name, "batch": batch, "threads": threads, "clock": clock,
            "step_seconds": total / steps,
            "kinds": kinds, "layers": layers}


def compare_layers(name: str, batch: int = 128, steps: int = 5, threads: int = 1,
                   clock: str = "wall") -> dict:
    """Median forward+backward seconds of each top-level layer in convnet and in PyTorch."""
    import torch

    import convnet as cn
    from bench.torch_twin import build_layer
    from convnet.core import backend
    from convnet.io import zoo
    from convnet.io.spec import layer_spec

    backend.set_num_threads(threads)
    torch.set_num_threads(threads)
    timer = time.thread_time if clock == "cpu" and threads == 1 else time.perf_counter
    cn.manual_seed(0)
    model = zoo.build_model(name)
    if not isinstance(model, cn.Sequential):
        raise SystemExit(f"bench.profile --torch: {name} is a graph (its layers do not feed "
                         f"each other in a chain); compare a chain (lenet5, convnetjs, vggish, "
                         f"resnet8, bottleneck) or profile {name} without --torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *zoo.MODELS[name].input_shape)).astype(np.float32)
    rows = []
    for index, layer in enumerate(model.layers):
        out = layer.forward(x)
        dy = rng.standard_normal(out.shape).astype(np.float32)
        layer.backward(dy)
        twin = build_layer(layer_spec(layer))
        twin.load_state_dict({key: torch.from_numpy(np.array(value))
                              for key, value in layer.state_dict().items()})
        tx = torch.from_numpy(x.copy()).requires_grad_(index > 0)
        tdy = torch.from_numpy(dy)

        def ours(layer=layer, x=x, dy=dy, first=index == 0):
            layer.forward(x)
            if first:
                layer.backward_parameters(dy)
            else:
                layer.backward(dy)

        def theirs(twin=twin, tx=tx, tdy=tdy):
            twin(tx).backward(tdy)

        seconds = {"convnet": [], "torch": []}
        for _ in range(steps + 1):
            for system, run in (("convnet", ours), ("torch", theirs)):
                time.sleep(PAUSE_SECONDS)
                run()  # wakes this system's threads: the timed run is the next
                start = timer()
                run()
                seconds[system].append(timer() - start)
        medians = {system: float(np.median(values[1:])) for system, values in seconds.items()}
        rows.append({"layer": layer.name, "input_shape": list(x.shape[1:]), **medians})
        x = out
    return {"network": name, "batch": batch, "threads": threads, "clock": clock, "layers": rows}


def format_comparison(result: dict) -> str:
    lines = [f"{result['network']}: forward+backward by layer, batch {result['batch']}, "
             f"{result['threads']} thread(s), {result['clock']} ms (PyTorch / convnet > 1: "
             f"convnet faster)"]
    for row in result["layers"] + [{"layer": "total", "input_shape": "",
                                    "convnet": sum(r["convnet"] for r in result["layers"]),
                                    "torch": sum(r["torch"] for r in result["layers"])}]:
        shape = "x".join(str(v) for v in row["input_shape"])
        lines.append(f"  {row['layer']:<10}{shape:>12}  convnet {row['convnet'] * 1e3:8.1f}  "
                     f"PyTorch {row['torch'] * 1e3:8.1f}  {row['torch'] / row['convnet']:6.2f}")
    return "\n".join(lines)


def format_profile(result: dict) -> str:
    step = result["step_seconds"]
    lines = [f"{result['network']}: batch {result['batch']}, {result['threads']} thread(s), "
             f"{step * 1e3:.1f} ms ({result['clock']}) per training step "
             f"({result['batch'] / step:.0f} images/s)"]
    lines.append("  by kind:   " + "  ".join(
        f"{kind} {seconds * 1e3:.1f} ms ({seconds / step:.0%})"
        for kind, seconds in result["kinds"].items()))
    by_layer: dict[str, dict[str, float]] = defaultdict(dict)
    for row in result["layers"]:
        by_layer[row["layer"]][row["phase"]] = row["seconds"]
    lines.append("  by layer:  " + "  ".join(
        f"{layer} {t.get('forward', 0) * 1e3:.1f}+{t.get('backward', 0) * 1e3:.1f}"
        for layer, t in by_layer.items()) + "  (forward+backward ms)")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*", default=["convnetjs", "vggish", "lenet5",
                                                          "bottleneck"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--torch", action="store_true", help="each layer beside PyTorch")
    args = parser.parse_args(argv)
    for name in args.networks:
        if args.torch:
            print(format_comparison(compare_layers(name, args.batch, args.steps, args.threads,
                                                   args.clock)))
            continue
        print(format_profile(profile_training(name, args.batch, args.steps, args.threads,
                                              args.clock)))


if __name__ == "__main__":
    main()
