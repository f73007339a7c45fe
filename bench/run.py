"""convnet against PyTorch on the reference networks, side by side on this machine.

    python -m bench.run            # the full run (`make bench`), under 15 minutes on 2 cores
    python -m bench.run --quick    # a smoke run of a minute or two

For each network (convnetjs, vggish, lenet5 and bottleneck, see ARCHITECTURES) both systems
get the same architecture, the same weights (drawn by convnet, copied into PyTorch) and the same
synthetic images, on the CPU at the same thread count. Each
system runs in its own fresh process (`bench.worker`); the first call of each task is timed
apart as warm-up, then timed repetitions alternate between the two processes (ABBA order) and
the median is reported. Tasks: training (forward, cross-entropy, backward, SGD momentum 0.9
step) and inference in images/s at batch 128, and latency of one image. Ratios are
convnet's speed over PyTorch's: above 1, convnet is faster. GFLOP/s count 2 FLOPs per
multiply-add of the forward pass (convnet's own summary arithmetic), three times that for a
training step, and are set against the machine's float32 matrix-product peak, measured first
with NumPy and PyTorch at the same thread count (the best of the repetitions of a large
product). Memory is each process's peak resident set.

The scaling study trains one network (convnetjs) at batch sizes 1 to 512 and at image sizes
32, 64 and 128, reporting time per image beside the multiply-adds per image.

Results: a table on stdout and JSON in bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NETWORKS = ["convnetjs", "vggish", "lenet5", "bottleneck"]
# The zoo's specs, in words; bottleneck is this benchmark's network with 1x1 convolutions.
ARCHITECTURES = {
    "convnetjs": "3x32x32; [conv5x5 pad 2, relu, maxpool 2] with 16, 20, 20 filters; fc 320->10",
    "vggish": "3x32x32; conv3x3 32, 32, pool, 64, 64, pool, 128, pool (pad 1, relu); fc 2048->10",
    "lenet5": "1x28x28; conv5x5 6 pad 2, relu, pool; conv5x5 16, relu, pool; fc 400-120-84-10",
    "bottleneck": "3x32x32; conv3x3 32 pad 1, relu, pool; residual [1x1 32->8, relu, 3x3 8->8, "
                  "relu, 1x1 8->32] + x, relu; 1x1 32->64, relu, pool; residual [1x1 64->16, "
                  "relu, 3x3 16->16, relu, 1x1 16->64] + x, relu; global average pool; fc 64->10",
}
SYSTEMS = ["convnet", "torch"]
TASKS = ["train", "infer", "latency"]
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
FLOPS_PER_MAC = 2
TRAIN_PASSES = 3  # forward, and a backward of about twice its cost


@dataclass
class Settings:
    networks: list[str]
    threads: int
    batch: int = 128
    reps: int = 9
    rep_seconds: float = 0.5  # each timed repetition repeats the task for about this long
    peak_size: int = 2048
    scaling_network: str = "convnetjs"
    scaling_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    image_sizes: tuple[int, ...] = (32, 64, 128)
    image_batch: int = 32


QUICK = {"reps": 5, "rep_seconds": 0.05, "peak_size": 1024, "scaling_batches": (1, 16, 128),
         "image_sizes": (32, 64)}


# -- worker processes ------------------------------------------------------------------------
class Worker:
    """A `bench.worker` process for one system, answering one JSON request at a time."""

    def __init__(self, system: str, threads: int):
        env = dict(os.environ)
        if system == "torch":
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        root = Path(__file__).resolve().parent.parent
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        self.system = system
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", system, "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root)

    def request(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"the {self.system} worker exited ({code}) during {request}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.system} worker: {reply['error']}")
        return reply

    def close(self) -> float:
        """Stop the process; returns its peak resident memory in MB."""
        rss = self.request(op="exit")["max_rss_mb"]
        self.process.wait()
        return rss


def start_pair(threads: int) -> dict[str, Worker]:
    return {system: Worker(system, threads) for system in SYSTEMS}


def close_pair(workers: dict[str, Worker]) -> dict[str, float]:
    return {system: worker.close() for system, worker in workers.items()}


# -- models as files both workers read ------------------------------------------------------
def write_model(name: str, folder: Path, input_size: int | None = None) -> tuple[dict, int]:
    """Draw zoo network `name` with seed 0 (at another image size if asked), write its spec and
    weights for the workers, and return the spec and forward multiply-adds per image."""
    import convnet as cn
    from convnet.io import zoo
    from convnet.io.spec import build, to_spec
    from convnet.nn.summary import summarize

    spec = zoo.spec_for(name)
    if input_size is not None:
        spec["input_shape"] = [spec["input_shape"][0], input_size, input_size]
    cn.manual_seed(0)
    model = build(spec)
    shape = tuple(spec["input_shape"])
    explicit = to_spec(model, shape)
    tag = f"{name}-{shape[1]}"
    explicit["files"] = {"spec": str(folder / f"{tag}.json"),
                         "weights": str(folder / f"{tag}.npz")}
    Path(explicit["files"]["spec"]).write_text(json.dumps(explicit))
    np.savez(explicit["files"]["weights"], **{k: np.asarray(v) for k, v in
                                              model.state_dict().items()})
    return explicit, summarize(model, shape).total_macs


# -- timing ---------------------------------------------------------------------------------
def time_task(workers: dict[str, Worker], task: str, settings: Settings) -> dict[str, dict]:
    """Warm-up apart, then `reps` interleaved repetitions of `task` on each worker.

    Returns per system: warm-up seconds, iterations per repetition, and seconds per iteration
    of every repetition.
    """
    result = {}
    for system, worker in workers.items():
        warmup = worker.request(op="run", task=task, iterations=1)["seconds"]
        probe = worker.request(op="run", task=task, iterations=1)["seconds"]
        iterations = max(1, round(settings.rep_seconds / max(probe, 1e-6)))
        result[system] = {"warmup_s": warmup, "iterations": iterations, "seconds": []}
    for rep in range(settings.reps):
        order = SYSTEMS if rep % 4 in (0, 3) else SYSTEMS[::-1]  # A B B A ...
        for system in order:
            iterations = result[system]["iterations"]
            seconds = workers[system].request(op="run", task=task,
                                              iterations=iterations)["seconds"]
            result[system]["seconds"].append(seconds / iterations)
    return result


def measure_peak(workers: dict[str, Worker], settings: Settings) -> dict:
    """The float32 matrix-product rate of NumPy and of PyTorch at the benchmark's threads."""
    rates = {system: worker.request(op="peak", size=settings.peak_size,
                                     repeats=settings.reps)["gflops"]
             for system, worker in workers.items()}
    # The best of the repetitions: other work on the machine only ever slows a product down.
    best = {system: max(values) for system, values in rates.items()}
    return {"size": settings.peak_size, "numpy_gflops": best["convnet"],
            "torch_gflops": best["torch"], "gflops": max(best.values()), "samples": rates}


def measure_network(name: str, settings: Settings, folder: Path,
                    with_peak: bool = False) -> tuple[dict, dict | None]:
    """Both systems on zoo network `name`; the matmul peak too (after the memory reading, so
    that its matrices do not count) when asked."""
    from convnet.io import zoo

    spec, macs = write_model(name, folder)
    workers = start_pair(settings.threads)
    for worker in workers.values():
        worker.request(op="setup", batch=settings.batch, **spec["files"])
    entry = {"description": zoo.MODELS[name].description,
             "architecture": ARCHITECTURES[name], "input_shape": spec["input_shape"],
             "macs_per_image": macs, "batch": settings.batch,
             "load_before": list(os.getloadavg())}
    per_system = {system: {} for system in SYSTEMS}
    for task in TASKS:
        timings = time_task(workers, task, settings)
        images = 1 if task == "latency" else settings.batch
        flops = macs * FLOPS_PER_MAC * (TRAIN_PASSES if task == "train" else 1)
        for system, timing in timings.items():
            seconds = statistics.median(timing["seconds"])
            record = {"warmup_s": timing["warmup_s"], "iterations_per_rep": timing["iterations"],
                      "seconds_per_iteration": timing["seconds"],
                      "median_seconds": seconds, "gflops": flops * images / seconds / 1e9}
            if task == "latency":
                record["ms"] = seconds * 1e3
            else:
                record["images_per_s"] = images / seconds
            per_system[system][task] = record
    for system, worker in workers.items():
        per_system[system]["peak_rss_mb"] = worker.request(op="rss")["max_rss_mb"]
    entry["load_after"] = list(os.getloadavg())
    peak = measure_peak(workers, settings) if with_peak else None
    close_pair(workers)
    entry.update(per_system)
    entry["ratio"] = {task: per_system["torch"][task]["median_seconds"]
                      / per_system["convnet"][task]["median_seconds"] for task in TASKS}
    entry["memory_ratio"] = (per_system["convnet"]["peak_rss_mb"]
                             / per_system["torch"]["peak_rss_mb"])
    return entry, peak


def measure_scaling(settings: Settings, folder: Path) -> dict:
    """Training time per image against batch size and image size, beside the arithmetic."""
    name = settings.scaling_network
    workers = start_pair(settings.threads)
    by_batch, by_size = [], []
    spec, macs = write_model(name, folder)
    for batch in settings.scaling_batches:
        for worker in workers.values():
            worker.request(op="setup", batch=batch, **spec["files"])
        timings = time_task(workers, "train", settings)
        by_batch.append(_scaling_row({"batch": batch}, timings, batch, macs))
    for size in settings.image_sizes:
        sized, sized_macs = write_model(name, folder, size)
        for worker in workers.values():
            worker.request(op="setup", batch=settings.image_batch, **sized["files"])
        timings = time_task(workers, "train", settings)
        by_size.append(_scaling_row({"image_size": size, "batch": settings.image_batch},
                                    timings, settings.image_batch, sized_macs))
    close_pair(workers)
    return {"network": name, "image_size": spec["input_shape"][1],
            "image_batch": settings.image_batch, "by_batch": by_batch, "by_image_size": by_size}


def _scaling_row(row: dict, timings: dict, batch: int, macs: int) -> dict:
    row["macs_per_image"] = macs
    for system, timing in timings.items():
        per_image = statistics.median(timing["seconds"]) / batch
        row[f"{system}_ms_per_image"] = per_image * 1e3
        # Training rate: flat when the cost grows as the arithmetic says.
        row[f"{system}_gflops"] = macs * FLOPS_PER_MAC * TRAIN_PASSES / per_image / 1e9
    return row


# -- report ---------------------------------------------------------------------------------
def machine() -> dict:
    import numpy

    from convnet.core import backend

    info = {"platform": platform.platform(), "processor": _cpu_name(),
            "cores": backend.available_cores(), "python": platform.python_version(),
            "numpy": numpy.__version__}
    try:
        from importlib.metadata import version

        info["torch"] = version("torch")
    except Exception:  # noqa: BLE001 - reported as unknown
        info["torch"] = "unknown"
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_report(result: dict) -> str:
    peak = result["peak"]
    lines = [
        f"bench.run: {result['machine']['processor']}, {result['threads']} threads for each "
        f"system, batch {result['batch']}, median of {result['reps']} interleaved repetitions; "
        f"load average {result['load_before'][0]:.2f} before, {result['load_after'][0]:.2f} "
        f"after",
        f"float32 matmul peak ({peak['size']}x{peak['size']}): NumPy {peak['numpy_gflops']:.0f}"
        f", PyTorch {peak['torch_gflops']:.0f} GFLOP/s; ratio = convnet speed / PyTorch speed",
        "",
        f"{'network':<11}{'task':<14}{'convnet':>14}{'PyTorch':>14}{'ratio':>8}"
        f"{'convnet GFLOP/s':>19}{'PyTorch GFLOP/s':>19}",
    ]
    for name, entry in result["networks"].items():
        for task in TASKS:
            cells = []
            for system in SYSTEMS:
                record = entry[system][task]
                cells.append(f"{record['ms']:.2f} ms" if task == "latency"
                             else f"{record['images_per_s']:,.0f} img/s")
            rates = [f"{entry[s][task]['gflops']:.1f} ({entry[s][task]['peak_fraction']:.0%})"
                     for s in SYSTEMS]
            label = {"train": "train", "infer": "infer", "latency": "latency b=1"}[task]
            lines.append(f"{name if task == 'train' else '':<11}{label:<14}{cells[0]:>14}"
                         f"{cells[1]:>14}{entry['ratio'][task]:>8.2f}{rates[0]:>19}"
                         f"{rates[1]:>19}")
        memory = [f"{entry[s]['peak_rss_mb']:.0f} MB" for s in SYSTEMS]
        lines.append(f"{'':<11}{'peak memory':<14}{memory[0]:>14}{memory[1]:>14}"
                     f"{entry['memory_ratio']:>8.2f}  (convnet / PyTorch, lower is better)")
        warmup = [f"{entry[s]['train']['warmup_s'] * 1e3:.0f} ms" for s in SYSTEMS]
        lines.append(f"{'':<11}{'first step':<14}{warmup[0]:>14}{warmup[1]:>14}        "
                     f"(training warm-up, not in the medians; load "
                     f"{entry['load_before'][0]:.2f} -> {entry['load_after'][0]:.2f})")
    lines += ["", "Networks (batch 128, float32, cross-entropy, SGD momentum 0.9):"]
    lines += [f"  {name:<11}{ARCHITECTURES[name]}" for name in result["networks"]]
    scaling = result.get("scaling")
    if scaling:
        lines += ["", f"Scaling, {scaling['network']} training: time per image beside the forward "
                      f"multiply-adds per image, and the GFLOP/s they imply (flat = the cost grows "
                      f"as the arithmetic says)"]
        header = (f"{'MMAC/img':>10}{'convnet ms':>12}{'PyTorch ms':>12}{'convnet GFLOP/s':>17}"
                  f"{'PyTorch GFLOP/s':>17}{'ratio':>8}")
        lines.append(f"{'batch':>7}{header}  (image {scaling['image_size']})")
        lines += [f"{row['batch']:>7}{_scaling_cells(row)}" for row in scaling["by_batch"]]
        lines.append(f"{'image':>7}{header}  (batch {scaling['image_batch']})")
        lines += [f"{row['image_size']:>7}{_scaling_cells(row)}"
                  for row in scaling["by_image_size"]]
    return "\n".join(lines)


def _scaling_cells(row: dict) -> str:
    ratio = row["torch_ms_per_image"] / row["convnet_ms_per_image"]
    return (f"{row['macs_per_image'] / 1e6:>10.1f}{row['convnet_ms_per_image']:>12.3f}"
            f"{row['torch_ms_per_image']:>12.3f}{row['convnet_gflops']:>17.1f}"
            f"{row['torch_gflops']:>17.1f}{ratio:>8.2f}")


def run(settings: Settings, command: str, scaling: bool = True) -> dict:
    result = {"command": command, "machine": machine(), "threads": settings.threads,
              "batch": settings.batch, "reps": settings.reps,
              "load_before": list(os.getloadavg()), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory(prefix="convnet-bench-") as tmp:
        folder = Path(tmp)
        result["networks"] = {}
        for name in settings.networks:
            entry, peak = measure_network(name, settings, folder, with_peak="peak" not in result)
            result["networks"][name] = entry
            result.setdefault("peak", peak)
            print(f"  {name} done", file=sys.stderr, flush=True)
        for entry in result["networks"].values():
            for system, task in itertools.product(SYSTEMS, TASKS):
                record = entry[system][task]
                record["peak_fraction"] = record["gflops"] / result["peak"]["gflops"]
        if scaling:
            result["scaling"] = measure_scaling(settings, folder)
    result["load_after"] = list(os.getloadavg())
    return result


def main(argv=None) -> None:
    from convnet.core import backend

    parser = argparse.ArgumentParser(description="convnet against PyTorch on the CPU",
                                     epilog="Writes bench/results/latest.json unless --out.")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=NETWORKS)
    parser.add_argument("--threads", type=int, default=backend.available_cores())
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--rep-seconds", type=float, default=None)
    parser.add_argument("--peak-size", type=int, default=None)
    parser.add_argument("--scaling-network", choices=NETWORKS, default=None)
    parser.add_argument("--scaling-batches", type=int, nargs="+", default=None)
    parser.add_argument("--image-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--image-batch", type=int, default=None)
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    options = dict(QUICK) if args.quick else {}
    for field in ("batch", "reps", "rep_seconds", "peak_size", "scaling_network",
                  "scaling_batches", "image_sizes", "image_batch"):
        value = getattr(args, field)
        if value is not None:
            options[field] = tuple(value) if isinstance(value, list) else value
    settings = Settings(networks=args.networks, threads=args.threads, **options)
    command = " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])])
    result = run(settings, command.strip(), scaling=not args.no_scaling)
    print(format_report(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
