"""convnet against PyTorch and onnxruntime on the reference networks, side by side on this machine.

    python -m bench.run            # the full run (`make bench`), about 25 minutes on 2 cores
    python -m bench.run --quick    # a smoke run of a few minutes

For each network (NETWORKS: the chains lenet5, convnetjs, vggish, resnet8 and bottleneck and
the graph models squeezenet-mini, mobilenet-mini and inception-mini; see ARCHITECTURES) every
system gets the same architecture, the same weights (drawn by convnet, copied into PyTorch,
and written by convnet's own ONNX export, `cn.onnx.export`, for onnxruntime) and the same
synthetic images, on the CPU at the same thread count. Each system runs in its own fresh
process (`bench.worker`); the first call of each task is timed apart as warm-up, then timed
repetitions, each of the task repeated for about --rep-seconds (sized by the fastest of several
calls), rotate between the processes (a different order each repetition) and the median is
reported. Tasks: training (forward, cross-entropy, backward, SGD momentum 0.9 step; convnet
and PyTorch) and inference in images/s at batch 128, and the latency of one image (all three).
Ratios are convnet's speed over the other system's: above 1, convnet is faster. The goals of
issue 16: inference and batch-1 latency >= 1.0 against onnxruntime, training >= 1.2 against
PyTorch. GFLOP/s count 2 FLOPs per multiply-add of the forward pass (convnet's own summary
arithmetic), three times that for a training step, and are set against the machine's float32
matrix-product peak, measured first with NumPy and PyTorch at the same thread count (the best of
the repetitions of a large product). Memory is each process's peak resident set. A network
that convnet cannot export to ONNX gets "n/a" in the onnxruntime column, with the reason.

The scaling study trains one network (convnetjs) at batch sizes 1 to 512 and at image sizes
32, 64 and 128, reporting time per image beside the multiply-adds per image.

Results: a table on stdout and JSON in bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import crosscore

NETWORKS = ["lenet5", "convnetjs", "vggish", "resnet8", "bottleneck", "squeezenet-mini",
            "mobilenet-mini", "inception-mini", "fcn-mini", "unet-mini"]
# The zoo's specs, in words; bottleneck is this benchmark's network with 1x1 convolutions.
ARCHITECTURES = {
    "resnet8": "3x32x32; conv3x3 16, bn, relu; basic blocks [conv3x3, bn, relu, conv3x3, bn] + x "
               "with 16, 32 (stride 2, 1x1 projection), 64 (stride 2) filters; gap; fc 64->10",
    "squeezenet-mini": "3x32x32; conv3x3 32, bn, relu, pool; fire(8, 16), fire(8, 32), pool, "
                       "fire(16, 32) [1x1 squeeze, bn, relu; 1x1 and 3x3 expands, concat]; "
                       "1x1 conv 10; gap",
    "mobilenet-mini": "3x32x32; conv3x3 16, bn, relu6; 5 inverted residuals [1x1 expand x4, "
                      "3x3 depthwise (stride 1, 2), squeeze-and-excitation, 1x1 project] "
                      "16-24-24-40-40; 1x1 128; gap; fc 128->10",
    "inception-mini": "3x32x32; conv3x3 16, bn, relu, pool; inception [1x1 | 1x1-3x3 | "
                      "1x1-3x3-3x3 | pool-1x1, concat] 48 channels, pool, inception 88; gap; "
                      "fc 88->10",
    "convnetjs": "3x32x32; [conv5x5 pad 2, relu, maxpool 2] with 16, 20, 20 filters; fc 320->10",
    "vggish": "3x32x32; conv3x3 32, 32, pool, 64, 64, pool, 128, pool (pad 1, relu); fc 2048->10",
    "lenet5": "1x28x28; conv5x5 6 pad 2, relu, pool; conv5x5 16, relu, pool; fc 400-120-84-10",
    "bottleneck": "3x32x32; conv3x3 32 pad 1, relu, pool; residual [1x1 32->8, relu, 3x3 8->8, "
                  "relu, 1x1 8->32] + x, relu; 1x1 32->64, relu, pool; residual [1x1 64->16, "
                  "relu, 3x3 16->16, relu, 1x1 16->64] + x, relu; global average pool; fc 64->10",
    "fcn-mini": "1x64x64, 11 classes a pixel; conv3x3 8, bn, relu; [conv4x4 stride 2, conv3x3] "
                "(bn, relu) with 16, 32, 64 filters; 1x1 scores at 1/8, 1/4, 1/2, each upsampled "
                "x2 (bilinear) and added to the next; x2 to 64x64",
    "unet-mini": "1x64x64, 11 classes a pixel; conv3x3 8, pool, [conv3x3 x2, pool] with 16, 32, "
                 "conv3x3 64 x2 (bn, relu); [2x2 transposed conv stride 2, concat with the "
                 "encoder's map, conv3x3] back up to 64x64; 1x1 scores + the bottleneck's scores "
                 "upsampled x8",
}
SYSTEMS = ["convnet", "torch", "onnxruntime"]
TASKS = ["train", "infer", "latency"]
# Which systems run which task (onnxruntime has no training step), and the order the tasks are
# timed in: inference first, so that its warm-up is a fresh process's first call.
TASK_SYSTEMS = {"train": ["convnet", "torch"], "infer": SYSTEMS, "latency": SYSTEMS}
TIMING_ORDER = ["infer", "latency", "train"]
LABELS = {"convnet": "convnet", "torch": "PyTorch", "onnxruntime": "onnxruntime"}
# The goals of issue 16: convnet's speed over the other system's.
GOALS = {"train": ("torch", 1.2), "infer": ("onnxruntime", 1.0),
         "latency": ("onnxruntime", 1.0)}
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
    # Seconds between two timed repetitions: onnxruntime's threads, PyTorch's OpenMP ones and
    # convnet's team spin a while after a call, and without the pause they run into the next
    # system's repetition (measured on bottleneck, no pause: convnet's batch-1 latency 0.108 ms
    # alone, 0.216 beside onnxruntime's worker; onnxruntime's 0.075 alone, 0.134 beside it).
    pause_seconds: float = 0.05


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

    def hold(self, held: bool) -> None:
        """Stop the idle process (SIGSTOP: its threads, spinning or not, take no core) or let
        it go on (SIGCONT). A no-op where the signals do not exist."""
        if hasattr(signal, "SIGSTOP"):
            self.process.send_signal(signal.SIGSTOP if held else signal.SIGCONT)

    def close(self) -> float:
        """Stop the process; returns its peak resident memory in MB."""
        rss = self.request(op="exit")["max_rss_mb"]
        self.process.wait()
        return rss

    def end(self) -> None:
        """Kill the process if it still runs (SIGKILL also ends one held stopped); close its
        pipes."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            pipe.close()


@contextlib.contextmanager
def running_workers(threads: int, systems=("convnet", "torch")):
    """Workers for `systems` that end with the block whatever ends it: an error, Ctrl-C or a
    kill (SIGTERM, which `main` turns into SystemExit). Killed mid-repetition, a run once left
    the idle workers held stopped by `time_task` (SIGSTOP), 0.5 GB of them, for good."""
    workers: dict[str, Worker] = {}
    try:
        for system in systems:
            workers[system] = Worker(system, threads)
        yield workers
    finally:
        for worker in workers.values():
            worker.end()


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def close_workers(workers: dict[str, Worker]) -> dict[str, float]:
    return {system: worker.close() for system, worker in workers.items()}


# -- models as files both workers read ------------------------------------------------------
def write_model(name: str, folder: Path, input_size: int | None = None,
                with_onnx: bool = False) -> tuple[dict, int]:
    """Draw zoo network `name` with seed 0 (at another image size if asked), write its spec and
    weights for the workers (and its ONNX export when asked: files["onnx"], or the reason it
    could not be exported in "onnx_error"), and return the spec and forward multiply-adds per
    image."""
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
    out_shape = model.output_shape(shape)  # C, H, W: a class for each pixel
    explicit["label_shape"] = list(out_shape[1:]) if len(out_shape) == 3 else []
    explicit["files"] = {"spec": str(folder / f"{tag}.json"),
                         "weights": str(folder / f"{tag}.npz")}
    Path(explicit["files"]["spec"]).write_text(json.dumps(explicit))
    np.savez(explicit["files"]["weights"], **{k: np.asarray(v) for k, v in
                                              model.state_dict().items()})
    if with_onnx:
        path = folder / f"{tag}.onnx"
        try:
            cn.onnx.export(model.eval(), path, input_shape=shape)
            explicit["files"]["onnx"] = str(path)
        except Exception as error:  # noqa: BLE001 - reported in the table as n/a
            explicit["onnx_error"] = f"{type(error).__name__}: {error}".splitlines()[0]
    return explicit, summarize(model, shape).total_macs


# -- timing ---------------------------------------------------------------------------------
def rotation(systems: list[str], rep: int) -> list[str]:
    """The order of the systems in repetition `rep`: each takes every place in turn, forwards
    and backwards (A B, B A, A B ... for two; A B C, C B A, B C A, A C B, ... for three), so
    that no system always runs right after another."""
    shift = (rep // 2) % len(systems)
    order = systems[shift:] + systems[:shift]
    return order if rep % 2 == 0 else order[::-1]


# The calls after the warm-up that size a repetition (the fastest counts): at least 3, and
# more until they add up to PROBE_SECONDS (at most 50)
PROBE_CALLS = (3, 50)
PROBE_SECONDS = 0.1


def time_task(workers: dict[str, Worker], task: str, settings: Settings) -> dict[str, dict]:
    """Warm-up apart, then `reps` interleaved repetitions of `task` on each worker, the
    other workers' processes stopped (SIGSTOP) during each.

    Returns per system: warm-up seconds, iterations per repetition, and seconds per iteration
    of every repetition (and convnet's share of calls run on one thread in each, where its
    worker reports it).
    """
    result = {}
    for system, worker in workers.items():
        warmup = worker.request(op="run", task=task, iterations=1)["seconds"]
        # sized by the fastest of several calls: the first few after the warm-up can still be
        # slow, and a call on its own request runs slower than calls back to back (convnet's
        # helper thread sleeps after 0.5 ms idle: convnetjs's image 139-183 us 2 ms apart
        # against 75-91 back to back). Sized by the second call alone, convnet's
        # repetitions of one image ran 50-400 ms instead of rep_seconds, noisier than the
        # other systems'
        probes = []
        while len(probes) < PROBE_CALLS[0] or (sum(probes) < PROBE_SECONDS
                                               and len(probes) < PROBE_CALLS[1]):
            probes.append(worker.request(op="run", task=task, iterations=1)["seconds"])
        probe = min(probes)
        iterations = max(1, round(settings.rep_seconds / max(probe, 1e-6)))
        result[system] = {"warmup_s": warmup, "iterations": iterations, "seconds": []}
    for rep in range(settings.reps):
        for system in rotation(list(workers), rep):
            iterations = result[system]["iterations"]
            others = [worker for name, worker in workers.items() if name != system]
            for worker in others:  # idle between requests: stopped, nothing of theirs runs
                worker.hold(True)
            try:
                time.sleep(settings.pause_seconds)  # the last system's spinning threads settle
                reply = workers[system].request(op="run", task=task, iterations=iterations)
            finally:
                for worker in others:
                    worker.hold(False)
            result[system]["seconds"].append(reply["seconds"] / iterations)
            if "alone_share" in reply:  # convnet's: which way its calls ran (thread_choice)
                result[system].setdefault("alone_share", []).append(reply["alone_share"])
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
    """Every system on zoo network `name`; the matmul peak too (after the memory reading, so
    that its matrices do not count) when asked."""
    spec, macs = write_model(name, folder, with_onnx=True)
    systems = [s for s in SYSTEMS if s != "onnxruntime" or "onnx" in spec["files"]]
    with running_workers(settings.threads, systems) as workers:
        return _measure_network(name, spec, macs, workers, settings, with_peak)


def _measure_network(name: str, spec: dict, macs: int, workers: dict[str, Worker],
                     settings: Settings, with_peak: bool) -> tuple[dict, dict | None]:
    from convnet.io import zoo

    setup = {system: worker.request(op="setup", batch=settings.batch, **spec["files"])["seconds"]
             for system, worker in workers.items()}
    entry = {"description": zoo.MODELS[name].description,
             "architecture": ARCHITECTURES[name], "input_shape": spec["input_shape"],
             "macs_per_image": macs, "batch": settings.batch, "systems": list(workers),
             "load_before": list(os.getloadavg())}
    if "onnx_error" in spec:
        entry["onnx_error"] = spec["onnx_error"]
    per_system = {system: {} for system in workers}
    entry["cross_core_us"] = [crosscore.round_trip_us()]  # the host's state (bench.crosscore)
    for task in TIMING_ORDER:
        doing = {s: workers[s] for s in TASK_SYSTEMS[task] if s in workers}
        timings = time_task(doing, task, settings)
        images = 1 if task == "latency" else settings.batch
        flops = macs * FLOPS_PER_MAC * (TRAIN_PASSES if task == "train" else 1)
        for system, timing in timings.items():
            seconds = statistics.median(timing["seconds"])
            record = {"warmup_s": timing["warmup_s"], "iterations_per_rep": timing["iterations"],
                      "seconds_per_iteration": timing["seconds"],
                      "median_seconds": seconds, "gflops": flops * images / seconds / 1e9}
            if "alone_share" in timing:  # per repetition, beside its seconds
                record["alone_share"] = timing["alone_share"]
            if task == "latency":
                record["ms"] = seconds * 1e3
            else:
                record["images_per_s"] = images / seconds
            per_system[system][task] = record
    for system, worker in workers.items():
        per_system[system]["peak_rss_mb"] = worker.request(op="rss")["max_rss_mb"]
        per_system[system]["setup_s"] = setup[system]
    entry["load_after"] = list(os.getloadavg())
    entry["cross_core_us"].append(crosscore.round_trip_us())
    peak = measure_peak({s: workers[s] for s in ("convnet", "torch")},
                        settings) if with_peak else None
    close_workers(workers)
    entry.update(per_system)
    entry["ratio"] = {task: per_system["torch"][task]["median_seconds"]
                      / per_system["convnet"][task]["median_seconds"] for task in TASKS}
    if "onnxruntime" in per_system:
        entry["ratio_onnxruntime"] = {
            task: per_system["onnxruntime"][task]["median_seconds"]
            / per_system["convnet"][task]["median_seconds"] for task in ("infer", "latency")}
    entry["memory_ratio"] = (per_system["convnet"]["peak_rss_mb"]
                             / per_system["torch"]["peak_rss_mb"])
    return entry, peak


def measure_scaling(settings: Settings, folder: Path) -> dict:
    """Training time per image against batch size and image size, beside the arithmetic."""
    with running_workers(settings.threads) as workers:
        return _measure_scaling(settings, folder, workers)


def _measure_scaling(settings: Settings, folder: Path, workers: dict[str, Worker]) -> dict:
    name = settings.scaling_network
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
    close_workers(workers)
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


def _cell(entry: dict, system: str, task: str) -> str:
    record = entry.get(system, {}).get(task)
    if record is None:
        return "-" if task == "train" or system in entry.get("systems", SYSTEMS) else "n/a"
    return f"{record['ms']:.2f} ms" if task == "latency" else f"{record['images_per_s']:,.0f} img/s"


def _rate(entry: dict, system: str, task: str) -> str:
    record = entry.get(system, {}).get(task)
    if record is None:
        return "-"
    return f"{record['gflops']:.1f} ({record['peak_fraction']:.0%})"


def _ratio(entry: dict, versus: str, task: str) -> float | None:
    ratios = entry["ratio"] if versus == "torch" else entry.get("ratio_onnxruntime", {})
    return ratios.get(task)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_report(result: dict) -> str:
    peak = result["peak"]
    lines = [
        f"bench.run: {result['machine']['processor']}, {result['threads']} threads for each "
        f"system, batch {result['batch']}, median of {result['reps']} interleaved repetitions; "
        f"load average {result['load_before'][0]:.2f} before, {result['load_after'][0]:.2f} "
        f"after",
        f"float32 matmul peak ({peak['size']}x{peak['size']}): NumPy {peak['numpy_gflops']:.0f}"
        f", PyTorch {peak['torch_gflops']:.0f} GFLOP/s (GFLOP/s columns: % of the larger); "
        f"ratios = convnet speed / the other system's (above 1: convnet faster)",
        "",
        f"{'network':<16}{'task':<13}{'convnet':>14}{'PyTorch':>14}{'onnxruntime':>14}"
        f"{'vs PyTorch':>11}{'vs ORT':>8}{'convnet GFLOP/s':>17}{'PyTorch':>14}"
        f"{'onnxruntime':>14}",
    ]
    notes = []
    for name, entry in result["networks"].items():
        for task in TASKS:
            label = {"train": "train", "infer": "infer", "latency": "latency b=1"}[task]
            cells = "".join(f"{_cell(entry, s, task):>14}" for s in SYSTEMS)
            rates = "".join(f"{_rate(entry, s, task):>{17 if s == 'convnet' else 14}}"
                            for s in SYSTEMS)
            lines.append(f"{name if task == 'train' else '':<16}{label:<13}{cells}"
                         f"{_number(_ratio(entry, 'torch', task)):>11}"
                         f"{_number(_ratio(entry, 'onnxruntime', task)):>8}{rates}")
        memory = "".join(f"{entry[s]['peak_rss_mb']:.0f} MB".rjust(14) if s in entry
                         else f"{'n/a':>14}" for s in SYSTEMS)
        lines.append(f"{'':<16}{'peak memory':<13}{memory}{entry['memory_ratio']:>11.2f}"
                     f"  (convnet / PyTorch, lower is better)")
        setup = "".join(f"{entry[s]['setup_s'] * 1e3:.0f} ms".rjust(14) if s in entry
                        else f"{'n/a':>14}" for s in SYSTEMS)
        lines.append(f"{'':<16}{'setup':<13}{setup}  (building the model from its files; "
                     f"onnxruntime: the session, its graph optimizations included)")
        first = "".join(f"{entry[s]['infer']['warmup_s'] * 1e3:.0f} ms".rjust(14) if s in entry
                        else f"{'n/a':>14}" for s in SYSTEMS)
        lines.append(f"{'':<16}{'first infer':<13}{first}  (a fresh process's first batch, "
                     f"not in the medians)")
        step = "".join(f"{entry[s]['train']['warmup_s'] * 1e3:.0f} ms".rjust(14)
                       if "train" in entry.get(s, {}) else f"{'-':>14}" for s in SYSTEMS)
        lines.append(f"{'':<16}{'first step':<13}{step}  (training warm-up; load "
                     f"{entry['load_before'][0]:.2f} -> {entry['load_after'][0]:.2f})")
        if "onnx_error" in entry:
            notes.append(f"  {name}: no onnxruntime column, convnet's export refused the model "
                         f"({entry['onnx_error']})")
    lines += ["", "Goals (issue 16), convnet speed / the other system's:",
              f"{'network':<16}{'train vs PyTorch':>18}{'infer vs ORT':>14}"
              f"{'b=1 vs ORT':>12}{'memory vs PyTorch':>19}{'cross-core us':>15}"]
    for name, entry in result["networks"].items():
        cells = []
        for task, width in (("train", 18), ("infer", 14), ("latency", 12)):
            versus, goal = GOALS[task]
            value = _ratio(entry, versus, task)
            mark = "" if value is None else (" ok" if value >= goal else " no")
            cells.append(f"{_number(value) + mark:>{width}}")
        trips = "/".join(f"{us:.2f}" for us in entry.get("cross_core_us", []))
        lines.append(f"{name:<16}{''.join(cells)}{entry['memory_ratio']:>19.2f}{trips:>15}")
    lines.append("  (goals: training >= 1.2 against PyTorch, inference and batch-1 latency >= 1.0 "
                 "against onnxruntime; cross-core: a cache line's round trip between two "
                 "threads before and after the network's timings, bench.crosscore)")
    lines += notes
    lines += ["", "Networks (batch 128, float32, cross-entropy, SGD momentum 0.9):"]
    lines += [f"  {name:<16}{ARCHITECTURES[name]}" for name in result["networks"]]
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
                record = entry.get(system, {}).get(task)
                if record is not None:
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
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # (the workers' cleanup runs: running_workers)
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
