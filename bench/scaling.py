"""Data-parallel scaling on this machine: training images/s on 1 and 2 processes for the
reference networks, the Allreduce time of each network's gradient, and what that implies for
clusters.

    python -m bench.scaling            # about 3 minutes on 2 cores
    python -m bench.scaling --quick    # under a minute

Each measurement starts `mpiexec -n N python -m bench.scaling --worker ...` with one BLAS thread
per process. A worker trains on synthetic images with the trainer's step (shard, forward,
backward, `allreduce_gradients`, SGD step, global statistics, stop agreement) for a fixed global
batch, so 2 processes split each batch in two (strong scaling). 1 and 2 processes are measured
alternately, three rounds each, and the fastest round is kept, as other work on the machine only
ever slows a run down. Results: a table on stdout and bench/results/scaling.json.
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

NETWORKS = ["convnetjs", "vggish", "lenet5", "bottleneck"]
RESULTS = Path(__file__).resolve().parent / "results" / "scaling.json"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Buffer sizes (MiB) for the Allreduce sweep, and the bucket sizes tried on the largest one.
SWEEP_MIB = [1, 16, 64]
BUCKETS_MIB = [1, 2, 4, 8, 16, 64]
# Cluster projection: machines, link speeds (Gbit/s) and per-message latency (s) assumed for
# MPI over TCP on Ethernet; RDMA fabrics have latencies nearer 2 us.
MACHINES = [8, 16, 32, 64]
LINKS_GBIT = [10, 100]
LATENCY_S = 30e-6


# -- the worker: one process of an mpiexec run -----------------------------------------------
def worker(network: str, batch: int, seconds: float, sweep: bool, out: Path) -> None:
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
    timed_steps, timed_exchanges = steps[1:], exchanges[1:]  # the first step warms up
    # The slowest rank's compute sets the pace of a step.
    slowest_cpu = max(group.comm.allgather(statistics.median(compute_cpu[1:]))
                      if group.size > 1 else [statistics.median(compute_cpu[1:])])
    result = {
        "network": network, "processes": group.size, "global_batch": batch,
        "parameters": sum(p.size for p in params),
        "gradient_bytes": sum(p.grad.nbytes for p in params), "steps": len(timed_steps),
        "step_ms": 1000 * statistics.median(timed_steps),
        "exchange_in_step_ms": 1000 * statistics.median(timed_exchanges),
        "compute_cpu_ms": 1000 * slowest_cpu,
    }
    result["images_per_s"] = batch / (result["step_ms"] / 1000)
    if group.size > 1:
        flat = np.zeros(result["parameters"], np.float32)
        result["allreduce_ms"] = 1000 * _allreduce_seconds(group, flat, repeats=50)
        if sweep:
            result["sweep"] = _sweep(group)
    if group.is_root:
        out.write_text(json.dumps(result))


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
def measure(network: str, processes: int, batch: int, seconds: float, sweep: bool) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [str(MPIEXEC), "-n", str(processes), sys.executable, "-m", "bench.scaling",
                   "--worker", network, "--batch", str(batch), "--seconds", str(seconds),
                   "--out", str(out)] + (["--sweep"] if sweep else [])
        root = Path(__file__).resolve().parents[1]
        environment = {**os.environ, **ONE_THREAD,
                       "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
        before, children = cpu_times(), resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        completed = subprocess.run(command, cwd=root, env=environment, capture_output=True,
                                   text=True, timeout=600)
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
        return result


def ring_allreduce_seconds(nbytes: int, machines: int, gbit_per_s: float,
                           latency_s: float = LATENCY_S) -> float:
    """A ring Allreduce moves 2(N-1)/N x the buffer through each link in 2(N-1) messages."""
    steps = 2 * (machines - 1)
    return steps / machines * nbytes / (gbit_per_s * 1e9 / 8) + steps * latency_s


def projection(rows: list[dict]) -> list[dict]:
    """Expected efficiency with one process per machine and 64 images per process per step
    (the global batch grows with N), compute as measured here on one core (CPU time of the
    1-process step, which other work on the machine does not inflate), no overlap."""
    out = []
    for row in rows:
        compute_s = row["compute_cpu_ms"]["one"] / 1000
        for machines in MACHINES:
            for link in LINKS_GBIT:
                comm_s = ring_allreduce_seconds(row["one"]["gradient_bytes"], machines, link)
                out.append({"network": row["network"], "machines": machines, "gbit_per_s": link,
                            "compute_ms": 1000 * compute_s, "allreduce_ms": 1000 * comm_s,
                            "efficiency": compute_s / (compute_s + comm_s)})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    parser.add_argument("--batch", type=int, default=64, help="global batch [default: 64]")
    parser.add_argument("--networks", nargs="+", default=NETWORKS, choices=NETWORKS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.batch, args.seconds, args.sweep, args.out)
        return 0
    if not MPIEXEC.exists():
        print(f"bench.scaling: {MPIEXEC} is missing; pip install 'convnet[mpi]'", file=sys.stderr)
        return 1
    seconds, rounds = (3.0, 1) if args.quick else (6.0, 3)
    rows = []
    for index, network in enumerate(args.networks):
        ones, twos = [], []
        for round_index in range(rounds):
            ones.append(measure(network, 1, args.batch, seconds, sweep=False))
            twos.append(measure(network, 2, args.batch, seconds,
                                sweep=index == 0 and round_index == 0))
        one = max(ones, key=lambda r: r["images_per_s"])
        two = max(twos, key=lambda r: r["images_per_s"])
        two.setdefault("sweep", twos[0].get("sweep", []))
        one_cpu = min(r["compute_cpu_ms"] for r in ones)
        two_cpu = min(r["compute_cpu_ms"] for r in twos)
        rows.append({"network": network, "one": one, "two": two,
                     "speedup": two["images_per_s"] / one["images_per_s"],
                     "efficiency": two["images_per_s"] / (2 * one["images_per_s"]),
                     "comm_to_compute": two["allreduce_ms"] / two_cpu,
                     # A step on two idle cores: the slower rank's compute, then the Allreduce.
                     "compute_cpu_ms": {"one": one_cpu, "two": two_cpu},
                     "idle_speedup_estimate": one_cpu / (two_cpu + two["allreduce_ms"]),
                     "rounds": {"one_images_per_s": [r["images_per_s"] for r in ones],
                                "two_images_per_s": [r["images_per_s"] for r in twos]}})
        print(f"measured {network}", file=sys.stderr, flush=True)
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_average": os.getloadavg()},
              "global_batch": args.batch, "quick": args.quick, "seconds": seconds,
              "rounds": rounds, "networks": rows,
              "sweep": rows[0]["two"].get("sweep", []), "projection": projection(rows),
              "projection_assumptions": {"latency_s": LATENCY_S, "images_per_process": 64,
                                         "formula": "2(N-1)/N * bytes / bandwidth + "
                                                    "2(N-1) * latency"}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nwritten to {RESULTS}")
    return 0


def render(report: dict) -> str:
    lines = [f"global batch {report['global_batch']}, one BLAS thread per process, "
             f"{report['machine']['cpus']} CPUs (load average at the end "
             f"{report['machine']['load_average'][0]:.1f})", "",
             f"{'network':<11}{'params':>8}{'grad KiB':>9}{'1p img/s':>10}{'2p img/s':>10}"
             f"{'speed-up':>9}{'step ms':>9}{'allreduce ms':>13}{'wait+xchg ms':>13}"
             f"{'comm/comp':>10}{'cores':>6}{'steal':>6}{'cpu ms 1p/2p':>14}{'idle est':>9}"]
    for row in report["networks"]:
        one, two = row["one"], row["two"]
        lines.append(f"{row['network']:<11}{one['parameters']:>8}"
                     f"{one['gradient_bytes'] / 1024:>9.0f}{one['images_per_s']:>10.0f}"
                     f"{two['images_per_s']:>10.0f}{row['speedup']:>9.2f}"
                     f"{two['step_ms']:>9.1f}{two['allreduce_ms']:>13.3f}"
                     f"{two['exchange_in_step_ms']:>13.3f}{row['comm_to_compute']:>10.4f}"
                     f"{two['cores_used']:>6.2f}"
                     f"{two.get('cpu', {}).get('steal', float('nan')):>6.0%}"
                     f"{row['compute_cpu_ms']['one']:>8.1f}/"
                     f"{row['compute_cpu_ms']['two']:<5.1f}{row['idle_speedup_estimate']:>9.2f}")
    legend = ("speed-up: 2-process over 1-process images/s, wall clock; cores: CPUs the "
              "2-process run got; steal: CPU time the hypervisor took; cpu ms: CPU time of a step "
              "outside the exchange (1 process; slowest of 2); idle est: the speed-up if each "
              "process had a core of its own: cpu 1p / (cpu 2p + allreduce)")
    lines += ["", *textwrap.wrap(legend, 100)]
    if report["sweep"]:
        lines += ["", "Allreduce of larger buffers, 2 processes (bucket: one Iallreduce each)"]
        lines += [f"  {s['mib']:>3} MiB, bucket {s['bucket_mib']:>3} MiB: {s['ms']:8.2f} ms "
                  f"({s['gbyte_per_s']:.2f} GB/s)" for s in report["sweep"]]
    lines += ["", "Projection: one process per machine, 64 images each, ring Allreduce "
              f"2(N-1)/N x bytes / link + 2(N-1) x {LATENCY_S * 1e6:.0f} us"]
    for row in report["projection"]:
        lines.append(f"  {row['network']:<11}N={row['machines']:<3}{row['gbit_per_s']:>4} Gbit/s"
                     f"  compute {row['compute_ms']:8.1f} ms  allreduce "
                     f"{row['allreduce_ms']:7.3f} ms  efficiency {row['efficiency']:.1%}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
