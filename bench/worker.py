"""One benchmark process: convnet, PyTorch or onnxruntime, driven line by line by `bench.run`.

    python -m bench.worker convnet --threads 2
    python -m bench.worker torch --threads 2
    python -m bench.worker onnxruntime --threads 2

Requests and replies are JSON lines on stdin/stdout:
    {"op": "setup", "spec": PATH, "weights": PATH, "onnx": PATH, "batch": B}
        -> {"seconds": build time}
    {"op": "run", "task": "train"|"infer"|"latency", "iterations": K}  -> {"seconds": total}
        (convnet's worker adds "alone_share": the share of its choices' calls that ran on one
        thread, `convnet.core.thread_choice`, or None where none was made)
    {"op": "peak", "size": S, "repeats": R}  -> {"gflops": [...]}  (S x S float32 products)
    {"op": "rss"}  -> {"max_rss_mb": peak resident memory of this process so far}
    {"op": "exit"}  -> {"max_rss_mb": ...}, and the process ends
No worker imports another system (the PyTorch and onnxruntime workers never import convnet, the
convnet worker neither torch nor onnxruntime), so each process's peak memory is its own
system's. onnxruntime runs convnet's own ONNX export of the same weights (written by
`bench.run`), inference only, with intra_op_num_threads = --threads (the calling thread
included, as PyTorch counts it) and its defaults otherwise (all graph optimizations, spinning
pool threads): the way it is deployed.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

SEED = 0
NUM_CLASSES = 10
LR, MOMENTUM = 0.01, 0.9


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: Linux's VmHWM, the high-water mark of its own
    address space. Not getrusage's ru_maxrss, which on Linux carries over the parent's peak
    through fork and exec: every worker read at least bench.run's own peak (onnxruntime's
    worker 218 MB on most networks, its own 85-197). Elsewhere ru_maxrss (kB on Linux, bytes
    on macOS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def synthetic_batch(batch: int, input_shape, label_shape=(), seed: int = SEED):
    """The same images and labels in both processes: standard normal pixels, uniform labels
    (one an image, or one a pixel: label_shape (H, W) for a segmentation network)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *input_shape)).astype(np.float32)  # B, C, H, W
    y = rng.integers(0, NUM_CLASSES, (batch, *label_shape))  # B (, H, W)
    return x, y


class ConvnetSystem:
    def __init__(self, threads: int):
        import convnet as cn
        from convnet.core import backend

        self.cn = cn
        backend.set_num_threads(threads)
        self.threads = threads

    def setup(self, spec: dict, state: dict, batch: int, onnx: str | None = None) -> None:
        from convnet.io.spec import build

        cn = self.cn
        self.model = build(spec)
        self.model.load_state_dict(state)
        self.x, self.y = synthetic_batch(batch, spec["input_shape"], spec.get("label_shape", ()))
        self.loss_fn = cn.CrossEntropyLoss()
        self.optimizer = cn.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)

    def train(self) -> None:
        self.model.train()
        scores = self.model.forward(self.x)
        self.loss_fn.forward(scores, self.y)
        self.model.backward(self.loss_fn.backward(), input_grad=False)
        self.optimizer.step()
        self.model.zero_grad()

    def infer(self, x=None) -> None:
        if self.model.training:  # once after training: eval() walks every layer (5-28 us)
            self.model.eval()
        with self.cn.no_grad():
            self.model.forward(self.x if x is None else x)

    def latency(self) -> None:
        self.infer(self.x[:1])

    def calls_made(self) -> tuple[int, int]:
        """(calls run shared, calls run alone) by the process's thread choices so far."""
        from convnet.core import thread_choice

        return thread_choice.calls_made()

    def peak(self, size: int, repeats: int) -> list[float]:
        """GFLOP/s of NumPy's float32 matrix product with BLAS at this worker's thread count."""
        from convnet.core import backend

        a, b = (np.random.default_rng(1).standard_normal((2, size, size)).astype(np.float32))
        backend.limit_blas_threads(self.threads)
        try:
            return _gflops(lambda: a @ b, size, repeats)
        finally:
            backend.limit_blas_threads(1)


class TorchSystem:
    def __init__(self, threads: int):
        import torch

        self.torch = torch
        torch.set_num_threads(threads)

    def setup(self, spec: dict, state: dict, batch: int, onnx: str | None = None) -> None:
        from bench.torch_twin import build_model

        torch = self.torch
        self.model = build_model(spec, state)
        x, y = synthetic_batch(batch, spec["input_shape"], spec.get("label_shape", ()))
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)

    def train(self) -> None:
        self.model.train()
        self.optimizer.zero_grad()
        self.loss_fn(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def infer(self, x=None) -> None:
        if self.model.training:  # as for convnet: the switch is not part of inference
            self.model.eval()
        with self.torch.inference_mode():
            self.model(self.x if x is None else x)

    def latency(self) -> None:
        self.infer(self.x[:1])

    def calls_made(self) -> None:
        return None  # (no choice between sharing and one thread to report)

    def peak(self, size: int, repeats: int) -> list[float]:
        torch = self.torch
        a, b = torch.randn(size, size), torch.randn(size, size)
        return _gflops(lambda: a @ b, size, repeats)


class OnnxruntimeSystem:
    """onnxruntime's CPU provider on convnet's export of the model: inference only."""

    def __init__(self, threads: int):
        import onnxruntime

        self.onnxruntime = onnxruntime
        self.threads = threads

    def setup(self, spec: dict, state: dict, batch: int, onnx: str | None = None) -> None:
        ort = self.onnxruntime
        if onnx is None:
            raise ValueError("the onnxruntime worker needs the model's ONNX file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.x, _ = synthetic_batch(batch, spec["input_shape"], spec.get("label_shape", ()))

    def train(self) -> None:
        raise ValueError("onnxruntime is benchmarked on inference only")

    def infer(self, x=None) -> None:
        self.session.run(None, {self.input_name: self.x if x is None else x})

    def latency(self) -> None:
        self.infer(self.x[:1])

    def calls_made(self) -> None:
        return None

    def peak(self, size: int, repeats: int) -> list[float]:
        raise ValueError("the matmul peak is measured by the convnet and PyTorch workers")


SYSTEM_CLASSES = {"convnet": ConvnetSystem, "torch": TorchSystem,
                  "onnxruntime": OnnxruntimeSystem}


def _gflops(product, size: int, repeats: int) -> list[float]:
    product()  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return rates


def serve(system, stdin=sys.stdin, stdout=sys.stdout) -> None:
    for line in stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "setup":
            start = time.perf_counter()
            with open(request["spec"]) as handle:
                spec = json.load(handle)
            with np.load(request["weights"]) as archive:
                state = {name: archive[name] for name in archive.files}
            system.setup(spec, state, request["batch"], request.get("onnx"))
            reply = {"seconds": time.perf_counter() - start}
        elif op == "run":
            task = getattr(system, request["task"])
            before = system.calls_made()
            start = time.perf_counter()
            for _ in range(request["iterations"]):
                task()
            reply = {"seconds": time.perf_counter() - start}
            if before is not None:  # convnet: how many calls ran alone (thread_choice)
                after = system.calls_made()
                shared, alone = after[0] - before[0], after[1] - before[1]
                reply["alone_share"] = alone / (shared + alone) if shared + alone else None
        elif op == "peak":
            reply = {"gflops": system.peak(request["size"], request["repeats"])}
        elif op in ("rss", "exit"):
            reply = {"max_rss_mb": peak_rss_mb()}
        else:
            reply = {"error": f"unknown op {op!r}"}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()
        if op == "exit":
            return


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="one benchmark process (see bench.run)")
    parser.add_argument("system", choices=list(SYSTEM_CLASSES))
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    serve(SYSTEM_CLASSES[args.system](args.threads))


if __name__ == "__main__":
    main()
