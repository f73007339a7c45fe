"""Data-parallel training over MPI: one model, N processes, on one machine or many.

    mpiexec -n 4 convnet train --model vggish --dataset cifar10 --batch-size 128

`process_group()` returns an `MPIGroup` when a launcher (`mpiexec`, `srun`) started more than one
process, else None, and the trainer runs single-process exactly as without MPI. The group is the
trainer's seam (`convnet.training.trainer.LocalGroup` lists the calls):

- start: rank 0's weights and batch-norm statistics are broadcast to every rank (also after a
  resume, so a run saved with any process count resumes with any other);
- each step: every rank prepares only its contiguous slice of the global batch (the trainer's
  `BatchLoader(..., part=(rank, size))`: the loader's order and augmentation draws are pure
  functions of seed, epoch and batch, so the slices put together are one process's batch);
  gradients, weighted by slice size, are summed with `Allreduce` over one flat buffer, so every
  rank takes the same optimizer step, equal within float rounding to one process's step on the
  whole batch (uneven and empty slices included). The exchange starts after backward: with
  gradients under 1 MiB it costs under 1% of a step here (`python -m bench.scaling`), and
  MPICH would not progress it during NumPy's compute;
- batch norm normalizes each slice with that slice's statistics (as PyTorch DDP and Horovod do
  without SyncBatchNorm); its running statistics ride in the same buffer and are averaged by
  slice size, so all ranks evaluate and checkpoint one set: the running mean tracks the whole
  batch's mean, the running variance leaves out the spread between slice means;
- batch norm with `--sync-bn` (`synchronize_batch_norm`): every BatchNorm2d sums its
  per-channel statistics over all slices, in forward (sums of x and x**2) and in backward (sums
  of the upstream gradient, each rank's weighted by its share of the batch), so it normalizes
  with the global batch's statistics as one process would: weights and running statistics are
  one process's within rounding (at one small exchange per layer, forward and backward);
- validation: each rank evaluates a contiguous share of whole batches (`share`) and the
  per-image losses and predictions are gathered (`allgather`): loss and accuracy are one
  process's exactly (`convnet.training.metrics`);
- dropout: each rank draws its slice's masks from its own stream of `convnet.core.rng` (rank 0 keeps
  the seeded one), so masks are independent across ranks but not those of a one-process run;
- faults: every collective is non-blocking and polled against a deadline (CONVNET_MPI_TIMEOUT
  seconds, default 60; CONVNET_MPI_START_TIMEOUT, default 600, for the first one, while ranks
  read data). A rank that hangs, or that ends while the others wait for it, makes them print why
  on stderr and `Abort` the job (exit status 75). A rank killed by a signal or ending with a
  non-zero status without Python's exit handlers is ended together with the others by Hydra's
  mpiexec at once. The last checkpoint, written atomically by the root, stays intact for
  `--resume`;
- shutdown: at exit each rank sends every other one a "leaving" message and receives theirs
  before MPI is finalized, so no message is left unreceived (the transport warns about those).
"""

from __future__ import annotations

import atexit
import os
import sys
import time
import zlib

import numpy as np

from convnet.core import rng
from convnet.data.loader import shard_bounds
from convnet.training.trainer import TrainingError

TIMEOUT_VARIABLE = "CONVNET_MPI_TIMEOUT"
START_TIMEOUT_VARIABLE = "CONVNET_MPI_START_TIMEOUT"
DEFAULT_TIMEOUT = 60.0  # seconds a rank waits for the others at one step's exchange
DEFAULT_START_TIMEOUT = 600.0  # the first exchange waits for every rank to read its data
ABORT_STATUS = 75  # EX_TEMPFAIL: a peer failed; the run can be resumed from its checkpoint
BUCKET_BYTES = 8 * 2**20  # bounds MPI's scratch memory; outstanding buckets pipeline (bench)
LEAVING_TAG = 7  # "this process has ended", sent at exit on the control communicator
LEAVING_GRACE = 2.0  # seconds to let an exchange that a departed peer did finish complete
SPIN_SECONDS = 0.05  # busy-poll this long before polling every POLL_SLEEP seconds
POLL_SLEEP = 0.0005

# Environment variables in which launchers give the number of processes they started.
SIZE_VARIABLES = (
    "PMI_SIZE",  # MPICH's Hydra mpiexec; Slurm srun --mpi=pmi2
    "OMPI_COMM_WORLD_SIZE",  # Open MPI mpirun
    "SLURM_STEP_NUM_TASKS",  # Slurm srun, whatever its --mpi plugin
)


class DistributedError(TrainingError):
    """MPI is asked for but cannot be used as launched; the message says how to fix it."""


def launched_size(environ=None) -> int:
    """How many processes a launcher started, from its environment variables; 1 if none did."""
    environ = os.environ if environ is None else environ
    for name in SIZE_VARIABLES:
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 1


def timeout_setting(name: str, default: float, environ=None) -> float:
    environ = os.environ if environ is None else environ
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise DistributedError(f"{name} must be a positive number of seconds, received "
                               f"{text!r}; e.g. {name}={default:.0f}")
    return value


def process_group(environ=None) -> MPIGroup | None:
    """An MPIGroup over every launched process, or None for a single process.

    MPI is initialized only when a launcher's environment says more than one process was
    started, so a plain `convnet train` never loads it, whether or not mpi4py is installed.
    """
    size = launched_size(environ)
    if size == 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError(
            f"started as one of {size} processes, but mpi4py is not installed, so each would "
            f"train alone into the same folder; install it with `pip install 'convnet[mpi]'` "
            f"and launch with that environment's mpiexec") from None
    world = MPI.COMM_WORLD.Get_size()
    if world != size:
        raise DistributedError(
            f"the launcher started {size} processes but MPI sees {world}: mpi4py's MPI library "
            f"does not talk to this launcher. Use the mpiexec installed next to mpi4py "
            f"({os.path.join(os.path.dirname(sys.executable), 'mpiexec')}); under Slurm use "
            f"`srun --mpi=pmi2` (`srun --mpi=list` shows the choices)")
    return MPIGroup(MPI.COMM_WORLD,
                    timeout=timeout_setting(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT, environ),
                    start_timeout=timeout_setting(START_TIMEOUT_VARIABLE, DEFAULT_START_TIMEOUT,
                                                  environ))


def _float_buffers(model) -> list[np.ndarray]:
    """The model's floating-point buffers (batch-norm running statistics), updated in place."""
    return [value for _, value in model.named_buffers()
            if isinstance(value, np.ndarray) and value.dtype.kind == "f"]


class MPIGroup:
    """The trainer's process group over an MPI communicator (see the module docstring).

    `broadcast_parameters(model)` binds the model whose batch-norm statistics are averaged with
    each step's gradients.
    """

    def __init__(self, comm, *, timeout: float = DEFAULT_TIMEOUT,
                 start_timeout: float = DEFAULT_START_TIMEOUT, bucket_bytes: int = BUCKET_BYTES):
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm.Dup()  # training collectives, apart from any the caller makes
        self.control = comm.Dup()  # "this process has ended" messages
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.is_root = self.rank == 0
        self.timeout = float(timeout)
        self.start_timeout = float(start_timeout)
        self.bucket_bytes = int(bucket_bytes)
        self.steps = 0  # steps since this process started, for messages
        self._local_count = 0
        self._global_images = 0.0  # in the step's batch (synchronized batch norm)
        self._model = None
        self._flat = np.empty(0, np.float32)
        self._started = False
        atexit.register(self._announce_exit)

    # -- the trainer's seam ------------------------------------------------------------------
    def shard(self, x, y):
        """What this rank computes on, given its slice x (b, C, H, W), y (b,) (or masks
        (b, H, W)) of a global batch.

        An empty slice (fewer images than ranks) is replaced by one stand-in image whose
        gradient and statistics are weighted 0, so forward and backward need no special case.
        """
        self.steps += 1
        self._local_count = len(y)
        if len(y):
            return x, y
        # labels (1,), or a mask (1, H, W) for a segmenter
        return np.zeros((1, *x.shape[1:]), x.dtype), np.zeros((1, *y.shape[1:]), y.dtype)

    def allreduce_gradients(self, params) -> None:
        """Replace each local gradient (of the mean loss over this rank's slice) by the global
        one: sum over ranks of gradient * local_count, over the sum of local_count. Batch-norm
        running statistics, averaged with the same weights, travel in the same flat buffer, and
        so does the count."""
        arrays = [param.grad for param in params]
        arrays += _float_buffers(self._model) if self._model is not None else []
        count = np.ones(1, np.float32)  # its slot carries local_count
        flat = self._pack([*arrays, count], self._local_count)
        self.allreduce(flat, "exchange gradients")
        total = flat[-1]  # the global batch's size, exact in floating point below 2**24
        if total > 1:
            flat /= total
        self._unpack(flat[:-1], arrays)

    def global_statistics(self, loss: float, correct: int, count: int) -> tuple[float, int, int]:
        """The global batch's mean loss, correct predictions and size from this slice's."""
        local = self._local_count  # `count` is 1 for a stand-in image, which counts for nothing
        figures = np.array([loss * local if local else 0.0, correct if local else 0, local],
                           np.float64)
        self.allreduce(figures, "sum the loss and accuracy")
        total = int(figures[2])
        return float(figures[0]) / max(total, 1), int(figures[1]), total

    def agree_to_stop(self, requested: bool) -> bool:
        flag = np.array([1 if requested else 0], np.int32)
        self.allreduce(flag, "agree whether to stop", op=self._MPI.MAX)
        return bool(flag[0])

    def broadcast_parameters(self, model) -> None:
        """Give every rank rank 0's weights and buffers; then give each rank but 0 a random
        stream of its own (dropout masks), derived from the shared seeded one."""
        self._model = model
        self._check_same_model(model)
        arrays = [param.data for param in model.parameters()] + _float_buffers(model)
        flat = self._pack(arrays, 1.0)
        requests = self._buckets(flat, lambda part: self.comm.Ibcast(part, root=0))
        self._wait(requests, "receive rank 0's weights")
        self._unpack(flat, arrays)
        if self.rank != 0:
            key = int(rng.generator().integers(2**63))
            rng.set_state(np.random.default_rng([key, self.rank]).bit_generator.state)

    def root_first(self, work, what: str):
        """work() on rank 0 first, then on the other ranks: a dataset is downloaded once, into
        the cache the others then read (on one machine, or over a shared file system). If rank
        0 fails, the others stop with a message that points at its output."""
        started = self._started  # waiting here does not end the start-up allowance
        if self.is_root:
            result = work()
            self._wait([self.comm.Ibarrier()], what)
        else:
            self._wait([self.comm.Ibarrier()], what)
            result = work()
        self._started = started
        return result

    def synchronize_batch_norm(self, model) -> None:
        """Make every BatchNorm2d of `model` take the global batch's statistics in training."""
        from convnet.nn.batchnorm import BatchNorm2d

        for layer in model.modules():
            if isinstance(layer, BatchNorm2d):
                layer.synchronize = self._sum_batch_norm

    def _sum_batch_norm(self, sums: np.ndarray, direction: str) -> np.ndarray:
        """Sums over every rank's slice of a BatchNorm2d's float64 statistics.

        Forward: [sum of x (C), sum of x**2 (C), values]. Backward: sums of the upstream
        gradient, which on each rank is that of the mean loss over its own slice (local_count
        images); each rank's are weighted by local_count / global images, as its parameter
        gradients are, and the total is returned at this rank's scale. A stand-in slice counts
        for nothing.
        """
        local = self._local_count
        if direction == "forward":
            flat = np.append(sums, local) if local else np.zeros(sums.size + 1)
            self.allreduce(flat, "synchronize batch norm")
            self._global_images = float(flat[-1])
            return flat[:-1]
        weight = local / self._global_images
        flat = sums * weight
        self.allreduce(flat, "synchronize batch norm's gradient")
        return flat / weight if local else flat

    def share(self, count: int) -> tuple[int, int]:
        """[first, stop) of `count` whole work items (evaluation batches) this rank takes."""
        return shard_bounds(count, self.size, self.rank)

    def allgather(self, array: np.ndarray, what: str = "gather the evaluation") -> np.ndarray:
        """The concatenation, in rank order, of every rank's 1-D `array` (lengths may differ)."""
        array = np.ascontiguousarray(array).ravel()
        counts = np.empty(self.size, np.int64)
        self._wait([self.comm.Iallgather(np.array([array.size], np.int64), counts)], what)
        joined = np.empty(int(counts.sum()), array.dtype)
        self._wait([self.comm.Iallgatherv(array, [joined, counts.tolist()])], what)
        return joined

    # -- flat buffers --------------------------------------------------------------------------
    def _pack(self, arrays, weight: float) -> np.ndarray:
        """One contiguous buffer holding weight * each array, in order (reused between steps)."""
        dtype = np.result_type(*arrays) if arrays else np.float32
        total = sum(a.size for a in arrays)
        if self._flat.size != total or self._flat.dtype != dtype:
            self._flat = np.empty(total, dtype)
        offset = 0
        for array in arrays:
            view = self._flat[offset:offset + array.size]
            if weight == 0:
                view.fill(0)  # a stand-in slice: its values, even non-finite, count for nothing
            elif weight == 1:
                view[...] = array.ravel()
            else:
                np.multiply(array.ravel(), weight, out=view, casting="unsafe")
            offset += array.size
        return self._flat

    @staticmethod
    def _unpack(flat: np.ndarray, arrays) -> None:
        offset = 0
        for array in arrays:
            array[...] = flat[offset:offset + array.size].reshape(array.shape)
            offset += array.size

    def _buckets(self, flat: np.ndarray, start_one):
        step = max(self.bucket_bytes // max(flat.itemsize, 1), 1)
        return [start_one(flat[i:i + step]) for i in range(0, flat.size, step)]

    def allreduce(self, flat: np.ndarray, what: str = "sum an array", op=None) -> None:
        """Sum (or `op`) `flat` over all ranks in place, in buckets, against the deadline."""
        op = op or self._MPI.SUM
        requests = self._buckets(flat, lambda part: self.comm.Iallreduce(
            self._MPI.IN_PLACE, part, op=op))
        self._wait(requests, what)

    def _check_same_model(self, model) -> None:
        """Refuse, before exchanging anything, models that differ between ranks."""
        layout = ";".join(f"{name}{tuple(param.shape)}{param.data.dtype}"
                          for name, param in model.named_parameters())
        mine = np.array([sum(p.size for p in model.parameters()),
                         zlib.crc32(layout.encode())], np.int64)
        everyone = np.empty((self.size, 2), np.int64)
        self._wait([self.comm.Iallgather(mine, everyone)], "compare the models")
        differing = [r for r in range(self.size) if not np.array_equal(everyone[r], everyone[0])]
        if differing:
            self._abort(f"rank(s) {', '.join(map(str, differing))} built a model other than "
                        f"rank 0's ({everyone[differing[0]][0]} parameters against "
                        f"{everyone[0][0]}): every process must read the same model file")

    # -- waiting, and failing clearly ----------------------------------------------------------
    def _wait(self, requests, what: str) -> None:
        """Poll `requests` until done; abort if a peer has ended, or past the deadline."""
        MPI = self._MPI
        limit = self.timeout if self._started else self.start_timeout
        started = time.monotonic()
        departed, departed_at, polls = None, 0.0, 0
        while not MPI.Request.Testall(requests):
            polls += 1
            if polls % 64:
                continue  # spin: the clock and the control messages are checked now and then
            now = time.monotonic()
            if departed is None:
                status = MPI.Status()
                if self.control.Iprobe(MPI.ANY_SOURCE, LEAVING_TAG, status):
                    departed, departed_at = status.Get_source(), now
            elif now - departed_at > LEAVING_GRACE:
                self._abort(f"rank {departed} ended while this one waited for it to {what} "
                            f"({self._when()}); its own output above says why")
            if now - started > limit:
                variable = TIMEOUT_VARIABLE if self._started else START_TIMEOUT_VARIABLE
                self._abort(f"waited {limit:g} s for the other ranks to {what} "
                            f"({self._when()}): a rank has died or hangs. If that legitimately "
                            f"takes longer, set {variable} (seconds) higher")
            if now - started > SPIN_SECONDS:
                time.sleep(POLL_SLEEP)
        self._started = True

    def _when(self) -> str:
        return f"step {self.steps} since start" if self.steps else "before the first step"

    def _abort(self, reason: str) -> None:
        advice = ("; the last checkpoint is intact: continue with `convnet train --resume "
                  "RUN_FOLDER` (any number of processes)") if self.steps else ""
        print(f"convnet: rank {self.rank} of {self.size}: {reason}. Stopping every rank{advice}",
              file=sys.stderr, flush=True)
        self.comm.Abort(ABORT_STATUS)
        os._exit(ABORT_STATUS)  # Abort may return while the launcher ends the others

    def _announce_exit(self) -> None:
        """At interpreter exit, tell the other ranks this one has ended, and hear the same
        from each of them before MPI is finalized.

        A rank still waiting in an exchange for this one (because this one failed) sees the
        message there and aborts at once rather than at the deadline. At a normal end every
        rank sends and receives one message per peer, so none is left unreceived: an unmatched
        send is what the UCX transport reports at finalize ("unexpected tag-receive descriptor
        ... was not matched"). A peer that has not ended within the step timeout is left to
        mpiexec: the unanswered receives are cancelled, so they too leave nothing behind.
        """
        MPI = self._MPI
        if MPI.Is_finalized():
            return
        peers = [peer for peer in range(self.size) if peer != self.rank]
        token = np.zeros(1, np.uint8)
        heard = np.zeros(len(peers), np.uint8)  # one byte per peer's own message
        sends = [self.control.Isend(token, dest=peer, tag=LEAVING_TAG) for peer in peers]
        receives = [self.control.Irecv(heard[i:i + 1], source=peer, tag=LEAVING_TAG)
                    for i, peer in enumerate(peers)]
        deadline = time.monotonic() + self.timeout
        while not MPI.Request.Testall(sends + receives) and time.monotonic() < deadline:
            time.sleep(POLL_SLEEP)
        for request in receives:
            if not request.Test():
                request.Cancel()
                request.Wait()

    def __repr__(self) -> str:
        return (f"MPIGroup(rank={self.rank}, size={self.size}, timeout={self.timeout:g}, "
                f"start_timeout={self.start_timeout:g})")


__all__ = ["MPIGroup", "DistributedError", "process_group", "shard_bounds", "launched_size"]
