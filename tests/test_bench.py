"""The benchmark harness runs end to end at tiny sizes and writes sane JSON (no speed claims)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_run_writes_a_consistent_report(tmp_path):
    out = tmp_path / "latest.json"
    command = [sys.executable, "-m", "bench.run", "--threads", "1", "--networks", "lenet5",
               "--batch", "4", "--reps", "2", "--rep-seconds", "0.005", "--peak-size", "64",
               "--scaling-network", "lenet5", "--scaling-batches", "1", "2",
               "--image-sizes", "28", "32", "--image-batch", "2", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "lenet5" in done.stdout and "peak memory" in done.stdout
    assert "onnxruntime" in done.stdout and "Goals" in done.stdout
    result = json.loads(out.read_text())

    assert result["threads"] == 1 and result["reps"] == 2
    assert len(result["load_before"]) == 3 and len(result["load_after"]) == 3
    peak = result["peak"]
    assert peak["gflops"] == max(peak["numpy_gflops"], peak["torch_gflops"]) > 0

    entry = result["networks"]["lenet5"]
    assert entry["macs_per_image"] > 0 and entry["input_shape"] == [1, 28, 28]
    assert len(entry["load_before"]) == 3 and len(entry["load_after"]) == 3
    assert len(entry["cross_core_us"]) == 2 and all(0 < us < 1e3 for us in entry["cross_core_us"])
    assert "/".join(f"{us:.2f}" for us in entry["cross_core_us"]) in done.stdout
    assert entry["systems"] == ["convnet", "torch", "onnxruntime"]
    for system in ("convnet", "torch", "onnxruntime"):
        assert entry[system]["peak_rss_mb"] > 0 and entry[system]["setup_s"] > 0
        tasks = ("infer", "latency") if system == "onnxruntime" else ("train", "infer", "latency")
        assert ("train" in entry[system]) == (system != "onnxruntime")
        for task in tasks:
            record = entry[system][task]
            assert len(record["seconds_per_iteration"]) == 2
            # convnet's worker says which way each repetition's calls ran (on one thread
            # no choice is made: None); the others have no choice to report
            assert (record.get("alone_share") == [None, None]) == (system == "convnet")
            assert record["warmup_s"] > 0 and record["median_seconds"] > 0
            assert math.isclose(record["peak_fraction"], record["gflops"] / peak["gflops"])
        task = tasks[0]
        assert math.isclose(entry[system][task]["images_per_s"],
                            4 / entry[system][task]["median_seconds"])
        assert math.isclose(entry[system]["latency"]["ms"],
                            entry[system]["latency"]["median_seconds"] * 1e3)
    for task in ("train", "infer", "latency"):
        assert math.isclose(entry["ratio"][task], entry["torch"][task]["median_seconds"]
                            / entry["convnet"][task]["median_seconds"])
    for task in ("infer", "latency"):
        assert math.isclose(entry["ratio_onnxruntime"][task],
                            entry["onnxruntime"][task]["median_seconds"]
                            / entry["convnet"][task]["median_seconds"])
    assert math.isclose(entry["memory_ratio"], entry["convnet"]["peak_rss_mb"]
                        / entry["torch"]["peak_rss_mb"])

    scaling = result["scaling"]
    assert [row["batch"] for row in scaling["by_batch"]] == [1, 2]
    assert [row["image_size"] for row in scaling["by_image_size"]] == [28, 32]
    small, large = scaling["by_image_size"]
    assert large["macs_per_image"] > small["macs_per_image"] > 0
    for row in scaling["by_batch"] + scaling["by_image_size"]:
        assert row["convnet_ms_per_image"] > 0 and row["torch_ms_per_image"] > 0
        assert row["convnet_gflops"] > 0 and row["torch_gflops"] > 0


def _children(pid: int) -> dict[int, str]:
    """{child pid: its state letter} of process `pid`, from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # (ended meanwhile)
            continue
        if int(fields[1]) == pid:
            found[int(stat.parent.name)] = fields[0]
    return found


def test_workers_end_with_their_block_even_when_held_stopped():
    from bench.run import running_workers

    with pytest.raises(RuntimeError, match="the block failed"):
        with running_workers(1, ("convnet",)) as workers:
            worker = workers["convnet"]
            assert worker.request(op="rss")["max_rss_mb"] > 0
            worker.hold(True)  # as time_task holds the idle ones
            raise RuntimeError("the block failed")
    assert worker.process.poll() is not None


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_workers_peak_memory_is_its_own_not_its_parents():
    """getrusage's ru_maxrss carries the parent's peak over fork and exec: a bench.run that had
    grown made every worker read at least its size."""
    import numpy as np

    from bench.run import running_workers

    held = np.ones(1 << 28, dtype=np.uint8)  # 256 MB touched in this process
    with running_workers(1, ("onnxruntime",)) as workers:
        worker_mb = workers["onnxruntime"].request(op="rss")["max_rss_mb"]
    parent_mb = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                         if line.startswith("VmHWM:")).split()[1]) / 1024
    assert held[-1] == 1 and parent_mb > 256
    assert 0 < worker_mb < parent_mb - 200, (worker_mb, parent_mb)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_bench_run_killed_mid_repetition_leaves_no_worker(tmp_path):
    """SIGTERM while the idle workers are held stopped: the run ends (status 143) and so do
    they (they once stayed stopped for good)."""
    import signal
    import time

    command = [sys.executable, "-m", "bench.run", "--threads", "1", "--networks", "lenet5",
               "--batch", "4", "--reps", "200", "--rep-seconds", "0.2", "--no-scaling",
               "--out", str(tmp_path / "latest.json")]
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while "T" not in (held := _children(run.pid)).values():
            assert run.poll() is None and time.monotonic() < deadline, "no worker was held"
            time.sleep(0.05)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if run.poll() is None:
            run.kill()
    time.sleep(0.5)  # (reaped by init once their parent is gone)
    for pid in held:
        assert _state(pid) in ("gone", "Z"), f"worker {pid} left in state {_state(pid)}"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_profile_accounts_for_the_step_and_compares_every_layer():
    from bench.profile import compare_layers, format_comparison, format_profile, profile_training
    from convnet.core import backend

    previous = backend.num_threads()
    try:
        result = profile_training("bottleneck", batch=2, steps=1, threads=1)
        assert result["step_seconds"] > 0
        assert math.isclose(sum(result["kinds"].values()), result["step_seconds"], rel_tol=1e-6) \
            or result["kinds"]["python"] == 0
        assert {row["layer"] for row in result["layers"]} >= {"conv1", "pool1", "relu1", "fc1"}
        assert "by kind" in format_profile(result)
        compared = compare_layers("lenet5", batch=2, steps=1)
        assert [row["layer"] for row in compared["layers"]][:3] == ["conv1", "relu1", "pool1"]
        assert all(row["convnet"] > 0 and row["torch"] > 0 for row in compared["layers"])
        assert "total" in format_comparison(compared)
        with pytest.raises(SystemExit, match="inception-mini is a graph"):
            compare_layers("inception-mini", batch=2, steps=1)
        graph = profile_training("inception-mini", batch=2, steps=1, threads=1)  # no refusal
        rows = {row["layer"] for row in graph["layers"]}
        assert {"bn1", "mixed3a_concat", "classifier"} <= rows
        assert "relu1" not in rows  # taken into bn1's passes, timed with it
    finally:
        backend.set_num_threads(previous)


def test_plan_profile_times_every_step_beside_onnxruntimes_nodes(monkeypatch):
    pytest.importorskip("onnxruntime")
    import numpy as np

    from bench import plan_profile
    from convnet.core import backend
    from convnet.io import zoo
    from convnet.nn import inference

    monkeypatch.setattr(inference, "MIN_LOAD_MACS", 0)  # a small batch still takes a plan
    monkeypatch.setattr(inference, "PIECE_BYTES", 100 << 10)  # pieces of 2 images for lenet5
    model = zoo.build_model("lenet5").eval()
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    previous = backend.num_threads()
    backend.set_num_threads(1)  # as plan_profile's main sets it
    try:
        ours = plan_profile.plan_steps(model, x, repeats=2)
    finally:
        backend.set_num_threads(previous)
    plan = next(iter(model._inference_plans.values()))
    assert plan.piece == 2  # timed piece by piece
    assert len(ours) == len(plan.steps) and all(seconds > 0 for _, seconds in ours)
    assert ours[0][0].startswith("ConvStep Conv2d(1, 6") and "GFLOP/s" in ours[0][0]
    theirs = plan_profile.onnxruntime_nodes(model, x, repeats=2)
    operators = " ".join(name for name, _ in theirs)
    assert "(Conv)" in operators and "(MaxPool)" in operators
    assert all(seconds > 0 for _, seconds in theirs)
