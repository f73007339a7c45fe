"""Data-parallel scaling on this machine: training images/s on 1, 2 and 4 processes for the
reference networks (4 processes share 2 cores: oversubscribed, and labelled so), each rank's
data-loading time, the Allreduce time of each network's gradient, the bytes a step sends over a
network link between two namespaces standing in for machines, and what that implies for
clusters.

    python -m bench.scaling            # about 9 minutes on 2 cores
    python -m bench.scaling --quick    # about 3 minutes

Each measurement starts `mpiexec -n N python -m bench.scaling --worker ...` with one BLAS thread
per process. A worker first times its loader: it prepares its slice of LOADER_BATCHES global
batches of synthetic images of the network's input shape (crop + flip for photos, crop for
digits, then normalization) with the trainer's `BatchLoader(..., part=(rank, N))`, and, for
contrast, the whole batch, as every rank did before. Then it trains on a synthetic batch with
the trainer's step (shard, forward, backward, `allreduce_gradients`, SGD step, global
statistics, stop agreement) for a fixed global batch, so N processes split each batch in N
(strong scaling). 1, 2 and 4 processes are measured alternately, three rounds each, and the
fastest round is kept, as other work on the machine only ever slows a run down.

Where network namespaces can be made (root on Linux; bench/netns.py), the worker also runs on
two namespaces joined by a bridge, one process each, MPI held to TCP, and counts the bytes and
packets its veth sent during the timed steps; and LeNet-5 trains one epoch of mnist-5k there
and in one process, for the weights' largest difference and the bytes per step of a real run.
Results: a table on stdout and bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from bench import netns

NETWORKS = ["convnetjs", "vggish", "lenet5", "bottleneck"]
PROCESSES = [1, 2, 4]  # 4 runs oversubscribed on a 2-core machine
RESULTS = Path(__file__).resolve().parent / "results" / "scaling.json"
ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Buffer sizes (MiB) for the Allreduce sweep, and the bucket sizes tried on the largest one.
SWEEP_MIB = [1, 16, 64]
BUCKETS_MIB = [1, 2, 4, 8, 16, 64]
# Global batches each worker's loader prepares, and the augmentation the datasets suggest
# (convnet.data.registry) by channel count: crop + flip for photos, crop for digits.
LOADER_BATCHES = 16
AUGMENTATION = {3: {"crop_padding": 4, "hflip": True}, 1: {"crop_padding": 2, "hflip": False}}
# Cluster projection: machines, link speeds (Gbit/s) and per-message latency (s) assumed for
# MPI over TCP on Ethernet; RDMA fabrics have latencies nearer 2 us.
MACHINES = [8, 16, 32, 64]
LINKS_GBIT = [10, 100]
LATENCY_S = 30e-6


# -- the worker: one process of an mpiexec run -----------------------------------------------
def worker(network: str, batch: int, seconds: float, sweep: bool, out: Path,
           link: str | None = None) -> None:
    import convnet as cn
    from convnet.io import zoo
    from convnet.nn.losses import CrossEntropyLoss
    from convnet.optim.optimizers import OPTIMIZERS
    from convnet.training import distributed
    from convnet.training.trainer import LocalGroup

    group = distributed.process_group() or LocalGroup()
    cn.manual_seed(0)
    model = zoo.build_model(network)
    shape = zoo.MODELS[network].input_shape
    loader = _loader_times(group, shape, batch)
    rng = np.random.default_rng(0)  # the same global batch on every process
    x = rng.standard_normal((batch, *shape)).astype(np.float32)  # B, C, H, W
    y = rng.integers(0, 10, batch)  # B
    start, stop = distributed.shard_bounds(batch, group.size, group.rank)
    x, y = x[start:stop], y[start:stop]  # this rank's slice, as its loader would prepare it
    params = model.parameters()
    optimizer = OPTIMIZERS["sgd"](params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = CrossEntropyLoss()
    group.broadcast_parameters(model)

    steps, exchanges, compute_cpu = [], [], []
    sent_before = _link_counters(link)
    began = time.perf_counter()
    while True:
        started, cpu_started = time.perf_counter(), time.process_time()
        xs, ys = group.shard(x, y)
        scores = model.forward(xs)
        loss = loss_fn.forward(scores, ys)
        model.backward(loss_fn.backward())
        exchange_started, cpu_computed = time.perf_counter(), time.process_time()
        group.allreduce_gradients(params)
        exchanged, cpu_exchanged = time.perf_counter(), time.process_time()
        optimizer.step()
        model.zero_grad()
        group.global_statistics(loss, int((scores.argmax(axis=1) == ys).sum()), len(ys))
        steps.append(time.perf_counter() - started)
        exchanges.append(exchanged - exchange_started)
        # CPU seconds of this process outside the exchange: what contention does not inflate.
        compute_cpu.append(time.process_time() - cpu_exchanged + cpu_computed - cpu_started)
        done = len(steps) >= 3 and time.perf_counter() - began > seconds
        if group.agree_to_stop(done):
            break
    sent_after = _link_counters(link)
    timed_steps, timed_exchanges = steps[1:], exchanges[1:]  # the first step warms up
    # The slowest rank's compute sets the pace of a step.
    slowest_cpu = max(_everyone(group, statistics.median(compute_cpu[1:])))
    result = {
        "network": network, "processes": group.size, "global_batch": batch,
        "parameters": sum(p.size for p in params),
        "gradient_bytes": sum(p.grad.nbytes for p in params), "steps": len(timed_steps),
        "step_ms": 1000 * statistics.median(timed_steps),
        "exchange_in_step_ms": 1000 * statistics.median(timed_exchanges),
        "compute_cpu_ms": 1000 * slowest_cpu, "loader": loader,
    }
    result["images_per_s"] = batch / (result["step_ms"] / 1000)
    if link is not None:
        # What each rank's network device sent per step (every step counted, the first too).
        sent = {key: (sent_after[key] - sent_before[key]) / len(steps) for key in sent_after}
        result["link_per_step"] = _everyone(group, sent)
    if group.size > 1:
        flat = np.zeros(result["parameters"], np.float32)
        result["allreduce_ms"] = 1000 * _allreduce_seconds(group, flat, repeats=50)
        if sweep:
            result["sweep"] = _sweep(group)
    if group.is_root:
        out.write_text(json.dumps(result))


def _everyone(group, value) -> list:
    """Every rank's `value`, in rank order."""
    return group.comm.allgather(value) if group.size > 1 else [value]


def _loader_times(group, shape, batch: int) -> dict:
    """Milliseconds of CPU and wall time per global batch this rank spends preparing its slice
    ("part", as the trainer does now) and the whole batch ("whole", as every rank did before),
    with the images prepared per batch; every rank's, in rank order. The ranks start together."""
    from convnet import data

    count = batch * LOADER_BATCHES
    images = np.random.default_rng(1).integers(0, 256, (count, *shape), dtype=np.uint8)
    dataset = data.Dataset(images, np.zeros(count, np.int64), ["any"], "synthetic")
    options = {"shuffle": True, "seed": 0, "normalization": data.Normalization.fit(images),
               "augmentation": AUGMENTATION[shape[0]]}
    mine = {}
    for name, part in (("part", (group.rank, group.size)), ("whole", (0, 1))):
        loader = data.BatchLoader(dataset, batch, part=part, **options)
        if group.size > 1:
            group.comm.Barrier()
        wall, cpu = time.perf_counter(), time.process_time()
        prepared = sum(len(y) for _, y in loader)
        mine[name] = {"cpu_ms": 1000 * (time.process_time() - cpu) / len(loader),
                      "wall_ms": 1000 * (time.perf_counter() - wall) / len(loader),
                      "images": prepared / len(loader)}
    everyone = _everyone(group, mine)
    return {name: {key: [rank[name][key] for rank in everyone] for key in mine[name]}
            for name in mine}


def _link_counters(device: str | None) -> dict[str, int]:
    """Bytes and packets `device` has sent (Linux sysfs of this process's network namespace)."""
    if device is None:
        return {}
    folder = Path("/sys/class/net") / device / "statistics"
    return {"bytes": int((folder / "tx_bytes").read_text()),
            "packets": int((folder / "tx_packets").read_text())}


def _allreduce_seconds(group, flat: np.ndarray, repeats: int) -> float:
    """Median time of the group's Allreduce of `flat`, every process starting together."""
    times = []
    for _ in range(repeats):
        group.comm.Barrier()
        started = time.perf_counter()
        group.allreduce(flat, "time the Allreduce")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _sweep(group) -> list[dict]:
    """Allreduce time for larger buffers, and on the largest for several bucket sizes."""
    rows = []
    default_bucket = group.bucket_bytes
    for mib in SWEEP_MIB:
        flat = np.zeros(mib * 2**20 // 4, np.float32)
        buckets = BUCKETS_MIB if mib == max(SWEEP_MIB) else [default_bucket // 2**20]
        for bucket in buckets:
            group.bucket_bytes = bucket * 2**20
            seconds = _allreduce_seconds(group, flat, repeats=5 if mib >= 16 else 20)
            rows.append({"mib": mib, "bucket_mib": bucket, "ms": 1000 * seconds,
                         "gbyte_per_s": mib * 2**20 / seconds / 1e9})
    group.bucket_bytes = default_bucket
    return rows


def cpu_times() -> dict[str, float]:
    """Seconds of all CPUs since boot by kind (Linux /proc/stat; empty elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return {}
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    tick = os.sysconf("SC_CLK_TCK")
    return {name: int(value) / tick for name, value in zip(names, fields, strict=False)}


def cpu_share(before: dict, after: dict) -> dict[str, float]:
    """Fractions of the CPUs' time between two `cpu_times()`: busy, idle and stolen by the
    hypervisor (time this virtual machine's CPUs were runnable but not running)."""
    spent = {name: after[name] - before[name] for name in before}
    total = sum(spent.values()) or 1.0
    return {"busy": (total - spent["idle"] - spent["iowait"] - spent["steal"]) / total,
            "idle": (spent["idle"] + spent["iowait"]) / total, "steal": spent["steal"] / total}


# -- the driver -------------------------------------------------------------------------------
def environment() -> dict:
    return {**os.environ, **ONE_THREAD,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def measure(network: str, processes: int, batch: int, seconds: float, sweep: bool,
            cluster: netns.VirtualCluster | None = None) -> dict:
    """One mpiexec run of the worker, on this machine or spread over `cluster`'s hosts."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, "-m", "bench.scaling", "--worker", network, "--batch",
                   str(batch), "--seconds", str(seconds), "--out", str(out)]
        command += ["--sweep"] if sweep else []
        env = environment()
        if cluster is None:
            command = [str(MPIEXEC), "-n", str(processes), *command]
        else:
            command = cluster.mpiexec(processes, [*command, "--link", netns.DEVICE])
            env = cluster.env(env)
        before, children = cpu_times(), resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                   timeout=600)
        wall = time.perf_counter() - started
        after, children_after = cpu_times(), resource.getrusage(resource.RUSAGE_CHILDREN)
        if completed.returncode != 0 or not out.exists():
            raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}):\n"
                               f"{completed.stdout}{completed.stderr}")
        result = json.loads(out.read_text())
        cpu_seconds = (children_after.ru_utime + children_after.ru_stime
                       - children.ru_utime - children.ru_stime)
        result["cores_used"] = cpu_seconds / wall  # by this run's processes, start-up included
        if before and after:
            result["cpu"] = cpu_share(before, after)
        result["transport_warnings"] = transport_warnings(completed.stdout + completed.stderr)
        return result


def transport_warnings(output: str) -> list[str]:
    """Lines in which UCX or MPICH report messages or objects left behind at the end."""
    return [line for line in output.splitlines()
            if ("UCX" in line and ("WARN" in line or "ERROR" in line)) or "not matched" in line]


def namespace_training(cluster: netns.VirtualCluster) -> dict:
    """LeNet-5, one epoch of mnist-5k, in one process and on the cluster's first two hosts:
    the weights' largest difference and what each host sent per step."""
    from convnet.io import checkpoint

    train = [sys.executable, "-m", "convnet", "train", "--model", "lenet5", "--dataset",
             "mnist-5k", "--epochs", "1", "--no-progress", "--out"]
    with tempfile.TemporaryDirectory() as folder:
        one, two = Path(folder) / "one", Path(folder) / "two"
        subprocess.run([*train, str(one)], cwd=ROOT, env=environment(), check=True,
                       capture_output=True, timeout=600)
        before = cluster.link_bytes()
        completed = subprocess.run(cluster.mpiexec(2, [*train, str(two)]), cwd=ROOT,
                                   env=cluster.env(environment()), capture_output=True,
                                   text=True, timeout=600)
        after = cluster.link_bytes()
        if completed.returncode != 0:
            raise RuntimeError(f"training on two namespaces failed:\n{completed.stderr}")
        expected, _, state, _ = checkpoint.read_checkpoint(one / "checkpoints" / "last.safetensors")
        actual, _, _, _ = checkpoint.read_checkpoint(two / "checkpoints" / "last.safetensors")
    steps = int(state["global_step"])
    sent = [after[host]["sent"] - before[host]["sent"] for host in cluster.hosts[:2]]
    return {"model": "lenet5", "dataset": "mnist-5k", "epochs": 1, "steps": steps,
            "bytes_sent": sent, "bytes_per_step": [b / steps for b in sent],
            "max_abs_difference": max(float(np.abs(actual[k] - expected[k]).max())
                                      for k in expected),
            "max_abs_weight": max(float(np.abs(v).max()) for v in expected.values()),
            "transport_warnings": transport_warnings(completed.stdout + completed.stderr)}


def ring_allreduce_seconds(nbytes: float, machines: int, gbit_per_s: float,
                           latency_s: float = LATENCY_S) -> float:
    """A ring Allreduce moves 2(N-1)/N x the buffer through each link in 2(N-1) messages."""
    steps = 2 * (machines - 1)
    return steps / machines * nbytes / (gbit_per_s * 1e9 / 8) + steps * latency_s


def loader_seconds(fit: dict, images: int) -> float:
    return (fit["fixed_ms"] + images * fit["per_image_us"] / 1000) / 1000


def projection(rows: list[dict], link_overhead: dict[str, float]) -> list[dict]:
    """Expected efficiency with one process per machine and 64 images per process per step
    (the global batch grows with N), no overlap of communication and work:

    - compute: the 1-process step's CPU time here (which other work does not inflate);
    - loader: CPU time to prepare 64 images, from the fit `loader_fit`; before this change
      every machine prepared all 64 N images of the global batch, so its loader time grew
      with N (the same fit at 64 N images);
    - Allreduce: the ring formula on the gradient's bytes times the overhead measured on the
      namespace link (bytes a step sent / gradient bytes; 1 where it was not measured).
    """
    out = []
    for row in rows:
        compute_s = row["compute_cpu_ms"]["1"] / 1000
        fit = row["loader_fit"]
        overhead = link_overhead.get(row["network"], 1.0)
        for machines in MACHINES:
            for link in LINKS_GBIT:
                comm_s = ring_allreduce_seconds(row["gradient_bytes"] * overhead, machines,
                                                link)
                work = compute_s + loader_seconds(fit, 64)
                out.append({"network": row["network"], "machines": machines, "gbit_per_s": link,
                            "compute_ms": 1000 * compute_s,
                            "loader_ms": 1000 * loader_seconds(fit, 64),
                            "allreduce_ms": 1000 * comm_s,
                            "efficiency": work / (work + comm_s),
                            "efficiency_whole_batch_loader":
                                work / (compute_s + loader_seconds(fit, 64 * machines) + comm_s)})
    return out


def fastest_loader(rounds: list[dict]) -> dict:
    """Each rank's fastest loader CPU time per batch over the rounds (other work only adds)."""
    return {kind: {"cpu_ms": [min(values) for values in
                              zip(*(r["loader"][kind]["cpu_ms"] for r in rounds), strict=True)],
                   "images": rounds[0]["loader"][kind]["images"]}
            for kind in ("part", "whole")}


def loader_fit(runs: dict[int, list[dict]]) -> dict[str, float]:
    """Loader CPU time per batch as fixed + per image, from the rank-0 slices of the fewest
    and most processes (the fastest round of each: other work only adds time)."""
    points = []
    for processes in (min(runs), max(runs)):
        part = [r["loader"]["part"] for r in runs[processes]]
        points.append((part[0]["images"][0], min(p["cpu_ms"][0] for p in part)))
    (many, t_many), (few, t_few) = points
    per_image = max((t_many - t_few) / (many - few), 0.0) if many != few else t_many / many
    return {"fixed_ms": max(t_many - per_image * many, 0.0), "per_image_us": 1000 * per_image}


def summarize(network: str, runs: dict[int, list[dict]]) -> dict:
    """The fastest round of each process count, and the figures derived from them."""
    best = {p: max(rounds, key=lambda r: r["images_per_s"]) for p, rounds in runs.items()}
    cpu = {p: min(r["compute_cpu_ms"] for r in rounds) for p, rounds in runs.items()}
    one = best[1]
    row = {"network": network, "parameters": one["parameters"],
           "gradient_bytes": one["gradient_bytes"],
           "runs": {str(p): r for p, r in best.items()},
           "speedup": {str(p): best[p]["images_per_s"] / one["images_per_s"] for p in best},
           "compute_cpu_ms": {str(p): ms for p, ms in cpu.items()},
           # A step if each process had a core of its own: the slowest rank's compute, then
           # the Allreduce.
           "idle_speedup_estimate": {str(p): cpu[1] / (cpu[p] + best[p].get("allreduce_ms", 0))
                                     for p in best},
           "rounds": {str(p): [r["images_per_s"] for r in rounds] for p, rounds in runs.items()},
           "loader": {str(p): fastest_loader(rounds) for p, rounds in runs.items()},
           "loader_fit": loader_fit(runs)}
    if 2 in best:
        row["comm_to_compute"] = best[2]["allreduce_ms"] / cpu[2]
        row["sweep"] = runs[2][0].get("sweep", [])
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    parser.add_argument("--batch", type=int, default=64, help="global batch [default: 64]")
    parser.add_argument("--networks", nargs="+", default=NETWORKS, choices=NETWORKS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--link", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.batch, args.seconds, args.sweep, args.out, args.link)
        return 0
    if not MPIEXEC.exists():
        print(f"bench.scaling: {MPIEXEC} is missing; pip install 'convnet[mpi]'", file=sys.stderr)
        return 1
    seconds, rounds = (3.0, 1) if args.quick else (6.0, 3)
    load_before = os.getloadavg()
    rows = []
    for index, network in enumerate(args.networks):
        runs = {p: [] for p in PROCESSES}
        for round_index in range(rounds):
            for processes in PROCESSES:
                sweep = index == 0 and round_index == 0 and processes == 2
                runs[processes].append(measure(network, processes, args.batch, seconds, sweep))
        rows.append(summarize(network, runs))
        print(f"measured {network}", file=sys.stderr, flush=True)
    reason = netns.unavailable()
    namespace = {"skipped": reason} if reason else {"hosts": 2, "networks": []}
    if reason is None:
        with netns.VirtualCluster(hosts=2) as cluster:
            for network in args.networks:
                namespace["networks"].append(measure(network, 2, args.batch, seconds, False,
                                                     cluster))
            namespace["training"] = namespace_training(cluster)
        print("measured across two namespaces", file=sys.stderr, flush=True)
    link_overhead = {r["network"]: max(s["bytes"] for s in r["link_per_step"])
                     / r["gradient_bytes"] for r in namespace.get("networks", [])}
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_average_before": load_before,
                          "load_average": os.getloadavg()},
              "global_batch": args.batch, "quick": args.quick, "seconds": seconds,
              "rounds": rounds, "processes": PROCESSES,
              "oversubscribed": [p for p in PROCESSES if p > (os.cpu_count() or 1)],
              "loader_batches": LOADER_BATCHES, "networks": rows,
              "sweep": rows[0].get("sweep", []), "namespace": namespace,
              "link_overhead": link_overhead, "projection": projection(rows, link_overhead),
              "projection_assumptions": {"latency_s": LATENCY_S, "images_per_process": 64,
                                         "formula": "2(N-1)/N * bytes * link overhead / "
                                                    "bandwidth + 2(N-1) * latency"}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nwritten to {RESULTS}")
    return 0


def _label(processes: int, report: dict) -> str:
    return f"{processes}p*" if processes in report["oversubscribed"] else f"{processes}p"


def render(report: dict) -> str:
    machine = report["machine"]
    cores = machine["cpus"]
    lines = [f"global batch {report['global_batch']}, one BLAS thread per process, {cores} CPUs "
             f"(load average {machine['load_average_before'][0]:.1f} before, "
             f"{machine['load_average'][0]:.1f} after; the machine is shared, so other work "
             f"may slow any run)", ""]
    if report["oversubscribed"]:
        lines += [f"* oversubscribed: {', '.join(map(str, report['oversubscribed']))} processes "
                  f"on {cores} cores: wall-clock figures share the cores; CPU figures do not", ""]
    labels = [_label(p, report) for p in report["processes"]]
    header = f"{'network':<11}{'grad KiB':>9}" + "".join(f"{lab + ' img/s':>11}" for lab in labels)
    header += "".join(f"{lab + ' x':>8}" for lab in labels[1:])
    header += f"{'allreduce ms':>13}{'comm/comp':>10}{'idle est 2p':>12}"
    lines.append(header)
    for row in report["networks"]:
        runs = row["runs"]
        line = f"{row['network']:<11}{row['gradient_bytes'] / 1024:>9.0f}"
        line += "".join(f"{runs[str(p)]['images_per_s']:>11.0f}" for p in report["processes"])
        line += "".join(f"{row['speedup'][str(p)]:>8.2f}" for p in report["processes"][1:])
        line += (f"{runs['2']['allreduce_ms']:>13.3f}{row['comm_to_compute']:>10.4f}"
                 f"{row['idle_speedup_estimate']['2']:>12.2f}")
        lines.append(line)
    legend = ("x: images/s over 1 process's, wall clock; allreduce: the gradient's Allreduce on "
              "2 processes; comm/comp: that over the step's CPU time; idle est: the speed-up if "
              "each process had a core of its own: cpu 1p / (cpu 2p + allreduce)")
    lines += ["", *textwrap.wrap(legend, 100), "",
              f"Loader: CPU ms per global batch each rank spends preparing images "
              f"({report['loader_batches']} batches; crop + flip for photos, crop for digits, "
              f"normalization), its slice now / the whole batch as before, per rank (fastest "
              f"of the rounds)"]
    for row in report["networks"]:
        for p in report["processes"]:
            loader = row["loader"][str(p)]
            part = " ".join(f"{ms:5.2f}" for ms in loader["part"]["cpu_ms"])
            whole = " ".join(f"{ms:5.2f}" for ms in loader["whole"]["cpu_ms"])
            images = "/".join(f"{n:g}" for n in loader["part"]["images"])
            lines.append(f"  {row['network']:<11}{_label(p, report):<4} slice [{part}]  "
                         f"whole [{whole}]  images {images}")
        fit = row["loader_fit"]
        lines.append(f"  {row['network']:<11}fit: {fit['fixed_ms']:.2f} ms per batch + "
                     f"{fit['per_image_us']:.1f} us per image")
    if report["sweep"]:
        lines += ["", "Allreduce of larger buffers, 2 processes (bucket: one Iallreduce each)"]
        lines += [f"  {s['mib']:>3} MiB, bucket {s['bucket_mib']:>3} MiB: {s['ms']:8.2f} ms "
                  f"({s['gbyte_per_s']:.2f} GB/s)" for s in report["sweep"]]
    namespace = report["namespace"]
    lines.append("")
    if "skipped" in namespace:
        lines.append(f"Two hosts in network namespaces: skipped ({namespace['skipped']})")
    else:
        lines.append("Two hosts in network namespaces (one process each, UCX over TCP on a "
                     "veth pair and a bridge): what each host sent per step")
        for run in namespace["networks"]:
            sent = run["link_per_step"]
            lines.append(f"  {run['network']:<11}gradient {run['gradient_bytes']:>8} B  sent "
                         + " / ".join(f"{s['bytes']:,.0f} B in {s['packets']:.0f} packets"
                                      for s in sent)
                         + f"  ({max(s['bytes'] for s in sent) / run['gradient_bytes']:.2f}x)"
                         f"  {run['images_per_s']:.0f} img/s, allreduce "
                         f"{run['allreduce_ms']:.2f} ms")
        training = namespace["training"]
        lines.append(f"  lenet5 training, 1 epoch of mnist-5k ({training['steps']} steps): "
                     f"{' / '.join(f'{b:,}' for b in training['bytes_sent'])} B sent, "
                     f"{' / '.join(f'{b:,.0f}' for b in training['bytes_per_step'])} B per "
                     f"step; weights differ from 1 process's by at most "
                     f"{training['max_abs_difference']:.2g} (largest weight "
                     f"{training['max_abs_weight']:.2g}); transport warnings: "
                     f"{len(training['transport_warnings'])}")
    lines += ["", "Projection: one process per machine, 64 images each, ring Allreduce "
              f"2(N-1)/N x bytes x link overhead / link + 2(N-1) x {LATENCY_S * 1e6:.0f} us; "
              "efficiency with each rank preparing its own images (and, before, the whole "
              "global batch)"]
    for row in report["projection"]:
        lines.append(f"  {row['network']:<11}N={row['machines']:<3}{row['gbit_per_s']:>4} Gbit/s"
                     f"  compute {row['compute_ms']:7.1f} ms  loader {row['loader_ms']:5.2f} ms"
                     f"  allreduce {row['allreduce_ms']:6.3f} ms  efficiency "
                     f"{row['efficiency']:.1%} (before {row['efficiency_whole_batch_loader']:.1%})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
