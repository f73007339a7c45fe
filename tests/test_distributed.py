"""Data-parallel training over MPI: `mpiexec -n 2` on this machine against one process.

The tests marked `mpi` start `mpiexec` from the virtual environment of the running Python; this
file is also the script those processes run (see `drive` at the bottom).
"""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_data import (
    GRAPH_MODEL,
    TINY_SEGMENTER,
    StopAt,
    make_angles_folder,
    make_mask_folder,
    three_class_model,
)

from bench import netns, scaling
from convnet import data
from convnet.core import rng
from convnet.io import checkpoint
from convnet.training import distributed
from convnet.training.trainer import LocalGroup, TrainConfig, Trainer

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
HAVE_MPI = importlib.util.find_spec("mpi4py") is not None and MPIEXEC.exists()
needs_mpi = pytest.mark.skipif(
    not HAVE_MPI, reason=f"needs mpi4py and {MPIEXEC}: pip install 'convnet[mpi]'")

# No dropout and no batch norm: with these a 2-process step equals a 1-process one up to
# rounding (dropout masks and batch-norm statistics are per process; see
# convnet.training.distributed).
MODEL = three_class_model()
# Batch norm and dropout: per process, so only the ranks' agreement with each other is exact.
MODEL_WITH_NOISE = three_class_model(batchnorm=True, dropout=0.3)
# Batch norm alone: one process's training with --sync-bn.
MODEL_WITH_BATCH_NORM = three_class_model(batchnorm=True)
# 75 images, a quarter of each class held out: 57 training images. In batches of 7 that is
# 8 batches split 4 + 3 over two processes, then one image: the second process gets none.
SETTINGS = {"epochs": 2, "batch_size": 7, "lr": 0.05, "seed": 3, "val_fraction": 0.25,
            "warmup_epochs": 0.5}
STEPS_PER_EPOCH = 9
CLI = "import sys; from convnet.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Three classes of 12x12 grey images (bars at three angles) and a tiny model."""
    root = tmp_path_factory.mktemp("distributed")
    make_angles_folder(root / "images", per_class=25, size=12, offsets=(2, 10))
    (root / "tiny.toml").write_text(MODEL)
    (root / "noisy.toml").write_text(MODEL_WITH_NOISE)
    (root / "batchnorm.toml").write_text(MODEL_WITH_BATCH_NORM)
    (root / "graph.toml").write_text(GRAPH_MODEL)
    return root


def settings(workspace) -> dict:
    return {"model": str(workspace / "tiny.toml"), "dataset": str(workspace / "images"),
            **SETTINGS}


def weights(folder, which="last"):
    arrays, _, state, _ = checkpoint.read_checkpoint(
        Path(folder) / "checkpoints" / f"{which}.safetensors")
    return arrays, state


def assert_close(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-4, atol=1e-5,
                                   err_msg=key)


def train_here(workspace, out, *, resume=False, stop_at=None, **changes) -> dict:
    """A single-process run in this process."""
    callbacks = [StopAt(stop_at)] if stop_at else []
    return Trainer(TrainConfig(**{**settings(workspace), **changes}), out, resume=resume,
                   callbacks=callbacks, progress=False, log=lambda _: None).fit()


@pytest.fixture(scope="module")
def reference(workspace, tmp_path_factory):
    """An uninterrupted single-process run: the weights every other run must reach."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train_here(workspace, out)
    return out


def launch(processes: int, arguments: list[str], *, env=None, timeout=60):
    """Run `mpiexec -n processes ARGUMENTS`; (return code, stdout + stderr, seconds)."""
    code, out, err, seconds = run_command([str(MPIEXEC), "-n", str(processes), *arguments],
                                          env=env, timeout=timeout)
    return code, out + err, seconds


def run_command(command: list[str], *, env=None, timeout=60):
    """(return code, stdout, stderr, seconds) of `command`, one BLAS thread per process."""
    environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": str(REPO), **(env or {})}
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{' '.join(command)} ran past {timeout} s")
    return process.returncode, out, err, time.monotonic() - started


# What the transport or MPICH print at finalize about messages or objects left behind, e.g.
# UCX's "unexpected tag-receive descriptor 0x55cc07407d80 was not matched".
TRANSPORT_WARNING = re.compile(r"UCX +(WARN|ERROR)|was not matched|leaked|yaksa")
# MPICH keeps messages between processes of one machine in its own shared memory, out of UCX's
# sight; these send them through UCX over TCP as between machines, where leftovers show.
THROUGH_TCP = {"MPIR_CVAR_NOLOCAL": "1", "UCX_TLS": "tcp,self", "MPIR_CVAR_CH4_NETMOD": "ucx"}


def assert_clean_shutdown(output: str) -> None:
    warnings = [line for line in output.splitlines() if TRANSPORT_WARNING.search(line)]
    assert not warnings, "\n".join(warnings)


def drive(processes: int, job: dict, *, env=None, timeout=60):
    """Run `drive_job(job)` (below) on `processes` processes."""
    return launch(processes, [sys.executable, __file__, json.dumps(job)], env=env,
                  timeout=timeout)


# -- without MPI ---------------------------------------------------------------------------------
def test_shards_cover_the_batch_in_order_and_rank_0_is_empty_only_for_an_empty_batch():
    for count in range(0, 30):
        for size in range(1, 9):
            bounds = [distributed.shard_bounds(count, size, rank) for rank in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == count
            assert all(stop == start for (_, stop), (start, _)
                       in zip(bounds[:-1], bounds[1:], strict=True))
            lengths = [stop - start for start, stop in bounds]
            assert max(lengths) - min(lengths) <= 1
            assert lengths[0] > 0 or count == 0
    assert [distributed.shard_bounds(13, 3, r) for r in range(3)] == [(0, 5), (5, 9), (9, 13)]


def test_the_parts_of_each_batch_are_the_one_process_batch_to_the_bit():
    images = np.random.default_rng(0).integers(0, 256, (23, 3, 6, 5), dtype=np.uint8)
    dataset = data.Dataset(images, np.arange(23) % 4, ["a", "b", "c", "d"], "synthetic")
    options = {"shuffle": True, "seed": 5, "normalization": data.Normalization.fit(images),
               "augmentation": {"crop_padding": 2, "hflip": True}}
    whole = list(data.BatchLoader(dataset, 7, **options).iter_from(3))
    for ranks in (2, 3, 4, 8):
        parts = [list(data.BatchLoader(dataset, 7, part=(rank, ranks), **options).iter_from(3))
                 for rank in range(ranks)]
        for b, (x, y) in enumerate(whole):
            np.testing.assert_array_equal(np.concatenate([p[b][0] for p in parts]), x)
            np.testing.assert_array_equal(np.concatenate([p[b][1] for p in parts]), y)
            assert [len(p[b][1]) for p in parts] == [
                stop - start for start, stop in
                (distributed.shard_bounds(len(y), ranks, r) for r in range(ranks))]
    # 8 ranks, last batch of 2: six ranks prepare nothing, and say so with empty arrays.
    assert parts[7][-1][0].shape == (0, 3, 6, 5) and parts[7][-1][1].shape == (0,)
    with pytest.raises(data.DataError, match=r"part must be \(rank, ranks\) with 0 <= rank < "
                                             r"ranks.*received \(2, 2\)"):
        data.BatchLoader(dataset, 7, part=(2, 2), **options)


def test_the_scaling_estimate_splits_loader_time_into_fixed_and_per_image():
    def run(images, cpu_ms):
        return {"loader": {"part": {"images": [images], "cpu_ms": [cpu_ms]}}}

    # 64 images in 0.84 ms, 16 in 0.36 ms: 0.2 ms fixed + 10 us an image.
    runs = {1: [run(64, 0.9), run(64, 0.84)], 2: [run(32, 0.5)], 4: [run(16, 0.36)]}
    fit = scaling.loader_fit(runs)
    assert fit == pytest.approx({"fixed_ms": 0.2, "per_image_us": 10.0})
    row = {"network": "n", "gradient_bytes": 10**6, "compute_cpu_ms": {"1": 20.0},
           "loader_fit": fit}
    now, *_ = scaling.projection([row], {"n": 1.05})
    work = 0.020 + 0.00084
    comm = scaling.ring_allreduce_seconds(1.05e6, 8, 10)
    assert now["machines"] == 8 and now["efficiency"] == pytest.approx(work / (work + comm))
    # Before, each of 8 machines prepared the whole global batch of 512 images.
    assert now["efficiency_whole_batch_loader"] == pytest.approx(
        work / (0.020 + 0.0002 + 512 * 10e-6 + comm))


def test_a_single_process_gets_no_group_and_never_loads_mpi(monkeypatch):
    for name in distributed.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # importing it would fail
    assert distributed.process_group() is None
    assert distributed.process_group({"PMI_SIZE": "1", "SLURM_STEP_NUM_TASKS": "1"}) is None


def test_many_processes_without_mpi4py_are_refused_rather_than_run_apart(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(distributed.DistributedError,
                       match=r"one of 4 processes, but mpi4py is not installed.*convnet\[mpi\]"):
        distributed.process_group({"SLURM_STEP_NUM_TASKS": "4"})


@pytest.mark.parametrize("text", ["soon", "0", "-5", "inf", "nan"])
def test_a_bad_timeout_setting_says_what_is_expected(text):
    with pytest.raises(distributed.DistributedError,
                       match=f"CONVNET_MPI_TIMEOUT must be a positive number of seconds, "
                             f"received '{text}'"):
        distributed.timeout_setting("CONVNET_MPI_TIMEOUT", 60.0, {"CONVNET_MPI_TIMEOUT": text})
    assert distributed.timeout_setting("CONVNET_MPI_TIMEOUT", 60.0, {}) == 60.0
    assert distributed.timeout_setting("X", 60.0, {"X": "2.5"}) == 2.5


# -- two processes ---------------------------------------------------------------------------------
@pytest.mark.mpi
@needs_mpi
def test_two_processes_train_the_weights_of_one_and_only_rank_0_writes(workspace, reference,
                                                                       tmp_path):
    trainer = Trainer(TrainConfig(**settings(workspace)), tmp_path / "probe", progress=False,
                      log=lambda _: None)
    trainer.setup()
    assert len(trainer.train_set) == 8 * 7 + 1  # uneven slices, then an empty one on rank 1

    out = tmp_path / "run"
    code, err, _ = drive(2, {"settings": settings(workspace), "out": str(out),
                             "own_folder_per_rank": True, "dump": str(tmp_path)},
                         env=THROUGH_TCP)
    assert code == 0, err
    assert_clean_shutdown(err)
    expected, _ = weights(reference)
    actual, state = weights(out)
    assert state["global_step"] == 2 * STEPS_PER_EPOCH
    assert_close(expected, actual)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    for key in ranks[0].files:  # both ranks hold exactly the same weights
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)

    assert not (tmp_path / "run-rank1").exists()  # rank 1 was given its own folder: untouched
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert files == sorted(str(p.relative_to(reference)) for p in reference.rglob("*"))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    alone = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for mine, theirs in zip(records, alone, strict=True):  # loss and accuracy of the global batches
        assert mine["train_accuracy"] == theirs["train_accuracy"]
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
    assert err.count("epoch 1/2") == 1  # one report, from rank 0


@pytest.mark.mpi
@needs_mpi
def test_a_graph_model_on_two_processes_trains_the_weights_of_one(workspace, tmp_path):
    graph = {**settings(workspace), "model": str(workspace / "graph.toml")}
    alone = tmp_path / "alone"
    Trainer(TrainConfig(**graph), alone, progress=False, log=lambda _: None).fit()
    code, err, _ = drive(2, {"settings": graph, "out": str(tmp_path / "run")}, env=THROUGH_TCP)
    assert code == 0, err
    assert_clean_shutdown(err)
    expected, _ = weights(alone)
    actual, _ = weights(tmp_path / "run")
    assert "scores.weight" in actual and "wide.weight" in actual  # a graph's state dict
    assert_close(expected, actual)


@pytest.mark.mpi
@needs_mpi
def test_a_segmenter_on_two_processes_trains_the_weights_of_one(tmp_path):
    # 22 images with masks, 6 held out: batches of 5, 5, 5, 1, so rank 1 gets no image of the
    # last one (a stand-in mask); validation is one batch, rank 1 evaluates none of it.
    make_mask_folder(tmp_path / "shapes", count=22)
    (tmp_path / "seg.toml").write_text(TINY_SEGMENTER)
    seg = {"model": str(tmp_path / "seg.toml"), "dataset": str(tmp_path / "shapes"),
           "epochs": 2, "batch_size": 5, "lr": 0.05, "optimizer": "adam", "seed": 3,
           "val_fraction": 0.25}
    alone = tmp_path / "alone"
    Trainer(TrainConfig(**seg), alone, progress=False, log=lambda _: None).fit()
    code, err, _ = drive(2, {"settings": seg, "out": str(tmp_path / "run")})
    assert code == 0, err
    assert_clean_shutdown(err)
    assert_close(weights(alone)[0], weights(tmp_path / "run")[0])
    records = [[json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
               for folder in (alone, tmp_path / "run")]
    for one, two in zip(*records, strict=True):  # pixel accuracy, IoU of the global batches
        assert two["train_accuracy"] == pytest.approx(one["train_accuracy"], rel=1e-4)
        assert two["val_mean_iou"] == pytest.approx(one["val_mean_iou"], rel=1e-4)
        assert two["val_iou"].keys() == one["val_iou"].keys()


@pytest.mark.mpi
@needs_mpi
def test_with_batch_norm_and_dropout_the_ranks_still_agree_exactly(workspace, tmp_path):
    job = {"settings": {**settings(workspace), "model": str(workspace / "noisy.toml")},
           "out": str(tmp_path / "run"), "dump": str(tmp_path)}
    code, err, _ = drive(2, job)
    assert code == 0, err
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    assert any("running_mean" in key for key in ranks[0].files)
    for key in ranks[0].files:  # weights and the averaged running statistics
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
    saved, _ = weights(tmp_path / "run")
    for key, value in saved.items():
        np.testing.assert_array_equal(value, ranks[0][key], err_msg=key)
    draws = [json.loads((tmp_path / f"rank{r}.json").read_text())["next_draw"] for r in range(2)]
    assert draws[0] != draws[1]  # each rank draws its dropout masks from a stream of its own


def test_sync_bn_is_off_unless_asked_for_on_the_command_line():
    from convnet.cli import build_parser
    from convnet.cli.train import config_from_args

    assert config_from_args(build_parser().parse_args(["train", "--sync-bn"])).sync_bn is True
    assert config_from_args(build_parser().parse_args(["train"])).sync_bn is False


@pytest.mark.mpi
@needs_mpi
def test_synchronized_batch_norm_trains_one_process_weights(workspace, tmp_path):
    changes = {"model": str(workspace / "batchnorm.toml"), "sync_bn": True}
    train_here(workspace, tmp_path / "one", **changes)  # one process: nothing to synchronize
    expected, _ = weights(tmp_path / "one")
    assert any("running_var" in key for key in expected)
    runs = {}
    for sync in (True, False):
        out = tmp_path / f"two-{sync}"
        code, err, _ = drive(2, {"settings": {**settings(workspace), **changes, "sync_bn": sync},
                                 "out": str(out)})
        assert code == 0, err
        runs[sync], _ = weights(out)
    assert_close(expected, runs[True])  # weights and running statistics, uneven slices too
    # Without it each process normalizes its own slice (4 and 3 images): another training.
    assert max(np.abs(runs[False][k] - expected[k]).max() for k in expected) > 1e-3


UNMATCHED_SEND = """
import numpy as np
from mpi4py import MPI
comm = MPI.COMM_WORLD.Dup()  # as MPIGroup's (MPICH drains COMM_WORLD's own at finalize)
request = comm.Isend(np.zeros(1, np.uint8), dest=1 - comm.rank, tag=5)  # nobody receives it
comm.Barrier()
request.Wait()
"""


@pytest.mark.mpi
@needs_mpi
def test_a_message_nobody_receives_is_reported_at_exit_through_tcp():
    """`assert_clean_shutdown` sees the warning the issue saw (a run used to leave one message per
    rank unreceived: its "leaving" notes, now exchanged both ways)."""
    code, err, _ = launch(2, [sys.executable, "-c", UNMATCHED_SEND], env=THROUGH_TCP)
    assert code == 0, err
    assert "unexpected tag-receive descriptor" in err
    with pytest.raises(AssertionError, match="was not matched"):
        assert_clean_shutdown(err)


@pytest.mark.mpi
@needs_mpi
def test_a_run_resumes_with_another_process_count(workspace, reference, tmp_path):
    expected, _ = weights(reference)
    # Two processes, a stop asked for on rank 1 alone: both stop there and rank 0 saves.
    two_then_one = tmp_path / "two-then-one"
    code, err, _ = drive(2, {"settings": settings(workspace), "out": str(two_then_one),
                             "fault": {"rank": 1, "step": 5, "kind": "stop"}})
    assert code == 0, err
    assert weights(two_then_one)[1]["global_step"] == 5
    assert train_here(workspace, two_then_one, resume=True)["epochs_done"] == 2
    assert_close(expected, weights(two_then_one)[0])

    # One process stopped mid-epoch, continued by two through the command line.
    one_then_two = tmp_path / "one-then-two"
    assert train_here(workspace, one_then_two, stop_at=12)["stopped"]
    code, err, _ = launch(2, [sys.executable, "-c", CLI, "train", "--resume", str(one_then_two),
                              "--no-progress"])
    assert code == 0, err
    assert err.count("resuming") == 1
    assert_close(expected, weights(one_then_two)[0])


@pytest.mark.mpi
@needs_mpi
def test_an_error_on_rank_0_before_training_stops_the_others_with_its_message(workspace,
                                                                              tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    code, err, seconds = launch(2, [sys.executable, "-c", CLI, "train", "--model",
                                    str(workspace / "tiny.toml"), "--dataset",
                                    str(workspace / "images"), "--out", str(tmp_path / "run")])
    assert code != 0
    assert "convnet: error: " in err and "already holds files; pass --resume" in err
    assert ("rank 1 of 2: rank 0 ended while this one waited for it to load the dataset "
            "(before the first step)") in err
    assert seconds < 30
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["notes.txt"]


@pytest.mark.mpi
@needs_mpi
def test_validation_split_over_processes_gives_one_process_figures_exactly(tmp_path):
    # mnist-5k, a quarter held out: 1000 images, 4 batches of 256 shared 2, 1, 1 by 3 ranks.
    job = {"settings": {"model": "lenet5", "dataset": "mnist-5k", "val_fraction": 0.25,
                        "seed": 4}}
    results = {}
    for processes in (1, 3):
        folder = tmp_path / str(processes)
        folder.mkdir()
        code, err, _ = drive(processes, {**job, "out": str(folder / "run"),
                                         "validate": str(folder)})
        assert code == 0, err
        assert_clean_shutdown(err)
        results[processes] = json.loads((folder / "result.json").read_text())
        shares = [json.loads((folder / f"share{r}.json").read_text())
                  for r in range(processes)]
        assert shares == ([[0, 4]] if processes == 1 else [[0, 2], [2, 3], [3, 4]])
    assert results[3]["count"] == 1000
    assert results[3] == results[1]  # printed figures, loss to the last bit, confusion matrix


@pytest.mark.mpi
@needs_mpi
def test_evaluate_on_two_processes_prints_what_one_prints(reference):
    # 75 images in batches of 16: 5 batches, 3 for rank 0 and 2 for rank 1.
    printed = {}
    for processes in (1, 2):
        for form in ([], ["--json"]):
            code, out, err, _ = run_command(
                [str(MPIEXEC), "-n", str(processes), sys.executable, "-c", CLI, "evaluate",
                 str(reference), "--split", "train", "--batch-size", "16", *form])
            assert code == 0, err
            assert_clean_shutdown(err)
            printed[processes, bool(form)] = out
    assert printed[2, False] == printed[1, False]
    assert printed[2, True] == printed[1, True]
    assert json.loads(printed[2, True])["count"] == 75
    assert "accuracy" in printed[2, False]


def test_without_root_the_hosts_test_is_skipped_and_says_why(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert netns.unavailable() == "making network namespaces needs root (CI runs as root)"


@pytest.mark.skipif(netns.unavailable() is not None, reason=f"network namespaces: "
                    f"{netns.unavailable()}")
def test_a_virtual_cluster_is_removed_even_when_its_run_fails():
    with pytest.raises(RuntimeError, match="the run failed"):
        with netns.VirtualCluster(hosts=3) as cluster:
            assert len(cluster.exists()) == 4  # the switch and three hosts
            # A process left running in a host, as a hung rank would be.
            hung = subprocess.Popen(["ip", "netns", "exec", cluster.hosts[1], "sleep", "60"])
            time.sleep(0.2)
            raise RuntimeError("the run failed")
    assert hung.wait(timeout=10) == -signal.SIGKILL
    assert not cluster.exists() and not cluster.folder.exists()


@pytest.mark.mpi
@pytest.mark.skipif(netns.unavailable() is not None, reason=f"two hosts in network namespaces: "
                    f"{netns.unavailable()}")
def test_two_hosts_over_tcp_train_the_weights_of_one(workspace, reference, tmp_path):
    """Two network namespaces on a bridge stand in for two machines (see bench/netns.py): a
    hostfile, a launcher into each as ssh would, UCX held to TCP over the veths."""
    out = tmp_path / "run"
    job = {"settings": settings(workspace), "out": str(out), "dump": str(tmp_path)}
    with netns.VirtualCluster(hosts=2) as cluster:
        before = cluster.link_bytes()
        code, output, err, _ = run_command(
            cluster.mpiexec(2, [sys.executable, __file__, json.dumps(job)]),
            env=cluster.env(), timeout=120)
        after = cluster.link_bytes()
        assert code == 0, output + err
    assert not cluster.exists()  # and removed again
    assert_clean_shutdown(output + err)
    assert_close(weights(reference)[0], weights(out)[0])
    networks = {json.loads((tmp_path / f"rank{r}.json").read_text())["network"] for r in range(2)}
    assert len(networks) == 2 and os.readlink("/proc/self/ns/net") not in networks
    # Every step each host sends at least its whole gradient to the other (the Allreduce).
    gradient_bytes = sum(a.nbytes for a in weights(reference)[0].values())
    sent = [after[host]["sent"] - before[host]["sent"] for host in cluster.hosts]
    assert min(sent) >= 2 * STEPS_PER_EPOCH * gradient_bytes, sent


ROOT_FIRST = """
import sys, time
from mpi4py import MPI
from convnet.training import distributed
group = distributed.MPIGroup(MPI.COMM_WORLD)
def work():
    if group.rank == 0:
        time.sleep(1.0)  # a download, say: rank 1 must not start meanwhile
    with open(sys.argv[1], "a") as log:
        log.write(f"{group.rank}\\n")
    return group.rank
assert group.root_first(work, "write the log") == group.rank
"""


@pytest.mark.mpi
@needs_mpi
def test_the_data_is_loaded_on_rank_0_before_the_others(tmp_path):
    log = tmp_path / "order.txt"
    code, err, _ = launch(2, [sys.executable, "-c", ROOT_FIRST, str(log)])
    assert code == 0, err
    assert log.read_text().split() == ["0", "1"]


def run_with_fault(workspace, out, kind, *, timeout_s=60):
    """Two processes; rank 1 fails at step 12, after epoch 1's checkpoint (step 9)."""
    return drive(2, {"settings": settings(workspace), "out": str(out),
                     "fault": {"rank": 1, "step": 12, "kind": kind}},
                 env={"CONVNET_MPI_TIMEOUT": str(timeout_s)}, timeout=90)


@pytest.mark.mpi
@needs_mpi
def test_a_rank_that_fails_stops_the_others_at_once_and_the_run_resumes(workspace, reference,
                                                                        tmp_path):
    out = tmp_path / "run"
    code, err, seconds = run_with_fault(workspace, out, "raise")
    assert code == distributed.ABORT_STATUS, err
    assert "RuntimeError: rank 1 fails at step 12" in err
    assert "rank 0 of 2: rank 1 ended while this one waited for it" in err
    assert "continue with `convnet train --resume" in err
    assert seconds < 30  # well before the 60 s deadline
    assert weights(out)[1]["global_step"] == STEPS_PER_EPOCH  # epoch 1's checkpoint, intact
    code, err, _ = drive(2, {"settings": settings(workspace), "out": str(out), "resume": True})
    assert code == 0, err
    assert_close(weights(reference)[0], weights(out)[0])


@pytest.mark.mpi
@needs_mpi
def test_a_killed_rank_stops_the_others_and_leaves_the_checkpoint(workspace, tmp_path):
    out = tmp_path / "run"
    code, err, seconds = run_with_fault(workspace, out, "kill")
    assert code == 9, err  # mpiexec ends the others at once and reports the signal
    assert "BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES" in err
    assert seconds < 30
    arrays, state = weights(out)
    assert state["global_step"] == STEPS_PER_EPOCH and arrays


@pytest.mark.mpi
@needs_mpi
def test_a_hung_rank_makes_the_others_abort_at_the_deadline(workspace, tmp_path):
    out = tmp_path / "run"
    code, err, seconds = run_with_fault(workspace, out, "hang", timeout_s=3)
    assert code == distributed.ABORT_STATUS, err
    assert ("rank 0 of 2: waited 3 s for the other ranks to agree whether to stop (step 12 "
            "since start): a rank has died or hangs. If that legitimately takes longer, set "
            "CONVNET_MPI_TIMEOUT (seconds) higher") in err
    # mpiexec normally ends the hung rank as soon as rank 0 aborts (about 8 s in all); once in
    # a full-suite run here it left it to finish its 60 s hang, so that is allowed too.
    assert 3 < seconds < 80
    assert weights(out)[1]["global_step"] == STEPS_PER_EPOCH


@pytest.mark.mpi
@needs_mpi
def test_sigterm_to_mpiexec_stops_every_rank_at_one_step_and_the_run_resumes(workspace,
                                                                               reference,
                                                                               tmp_path):
    # What a batch system's time limit does (Slurm's scancel, a container's stop): SIGTERM to
    # mpiexec, which passes it to the ranks; they agree on one step, rank 0 saves, and the run
    # resumes to the uninterrupted run's weights.
    out = tmp_path / "run"
    job = {"settings": settings(workspace), "out": str(out), "slow_step_s": 0.4}
    environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([str(MPIEXEC), "-n", "2", sys.executable, __file__,
                                json.dumps(job)], cwd=REPO, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        if time.monotonic() > deadline or process.poll() is not None:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the run did not finish its first epoch: {process.communicate()}")
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"mpiexec did not end within 60 s of SIGTERM: {process.communicate()}")
    output = stdout + stderr
    assert "SIGTERM received" in output, output
    _, state = weights(out)
    stopped_at = state["global_step"]
    assert STEPS_PER_EPOCH <= stopped_at < 2 * STEPS_PER_EPOCH, output
    assert checkpoint.read_checkpoint(out / "checkpoints" / "best.safetensors")
    code, err, _ = drive(2, {"settings": settings(workspace), "out": str(out), "resume": True})
    assert code == 0, err
    assert_close(weights(reference)[0], weights(out)[0])


# -- what each process runs ----------------------------------------------------------------------
class SlowSteps:
    """Every step takes at least `seconds` (a run long enough to be stopped by a signal)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def on_batch(self, trainer, stats):
        time.sleep(self.seconds)


class Fault:
    """On rank `rank` at step `step`: raise, be killed, hang, or ask to stop."""

    def __init__(self, rank, step, kind):
        self.rank, self.step, self.kind = rank, step, kind

    def on_batch(self, trainer, stats):
        if trainer.group.rank != self.rank or stats["step"] != self.step:
            return
        if self.kind == "raise":
            raise RuntimeError(f"rank {self.rank} fails at step {self.step}")
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kind == "hang":
            time.sleep(60)
        if self.kind == "stop":
            trainer.stop("test")


def drive_job(job: dict) -> int:
    group = distributed.process_group() or LocalGroup()
    if "validate" in job:
        return validate_job(group, job)
    out = Path(job["out"])
    if job.get("own_folder_per_rank") and group.rank != 0:
        out = out.with_name(f"{out.name}-rank{group.rank}")  # where it must never write
    callbacks = [Fault(**job["fault"])] if "fault" in job else []
    if "slow_step_s" in job:
        callbacks.append(SlowSteps(job["slow_step_s"]))
    trainer = Trainer(TrainConfig(**job["settings"]), out, resume=job.get("resume", False),
                      callbacks=callbacks, group=group, progress=False)
    trainer.fit()
    if "dump" in job:
        arrays = {key: np.asarray(value) for key, value in trainer.model.state_dict().items()}
        np.savez(Path(job["dump"]) / f"rank{group.rank}.npz", **arrays)
        draw = {"next_draw": float(rng.generator().random()),
                "network": os.readlink("/proc/self/ns/net")}  # which network stack it ran on
        (Path(job["dump"]) / f"rank{group.rank}.json").write_text(json.dumps(draw))
    return 0


def validate_job(group, job: dict) -> int:
    """Set a run up, evaluate its validation set once, and write what rank 0 would print."""
    trainer = Trainer(TrainConfig(**job["settings"]), job["out"], group=group, progress=False)
    trainer.setup()
    result = trainer.evaluate_loader(trainer.val_loader)
    share = group.share(len(trainer.val_loader))
    Path(job["validate"], f"share{group.rank}.json").write_text(json.dumps(share))
    if group.is_root:
        printed = f"val loss {result.loss:.4f} acc {result.accuracy:.2%}"
        Path(job["validate"], "result.json").write_text(json.dumps(
            {"printed": printed, **result.to_dict()}))
    return 0


if __name__ == "__main__":
    sys.exit(drive_job(json.loads(sys.argv[1])))
