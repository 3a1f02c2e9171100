"""Data-parallel training over several processes: ``torchrun`` starts one process per CPU socket or GPU (on one
machine or several), and each process trains a replica of the model on its share of every batch under
``torch.nn.parallel.DistributedDataParallel`` (DDP), which averages the gradients across processes in backward.

    torchrun --nproc-per-node 2 -m rnnlab train lm --train input.txt --batch-size 32 --out runs/ddp

How a batch is shared. Every process (a *rank*) reads the same data stream — every data set in rnnlab is seeded and
resumable, so all ranks make the same *global* batch of ``--batch-size`` examples — and keeps its contiguous slice
along the batch dimension (``shard``): rank r of W gets examples [r*B/W, (r+1)*B/W). Each rank's task returns the
mean loss over its n_r tokens; the trainer scales it by ``W * n_r / N`` (N = the tokens of all ranks, one
all-reduce) before backward, so DDP's average of the W gradients is the gradient of the mean over all N tokens —
the update of single-process training with the same global batch, also when the shards hold unequal token counts
(tagging, seq2seq, a last batch smaller than the rest). A batch of fewer than W examples leaves some rank without
one: that rank runs the batch's first example with weight 0, since every rank must take part in backward.

What is per rank and what is shared:
- the model and optimizer state: the same on every rank (DDP starts them from rank 0's weights, every update is the
  same);
- the state a task carries between batches (an LM's hidden state): each rank carries its own columns; checkpoints
  hold all columns (gathered), so a run resumes with any number of processes that divides the batch;
- the decisions: the loss the fault checks see, the validation loss, Ctrl-C and ``max_minutes`` are reduced across
  ranks, so every rank skips, rolls back, stops and saves at the same step (a rank that decided alone would wait
  forever in the next all-reduce);
- output: only rank 0 prints, writes checkpoints and ``metrics.jsonl``; ``setup`` sends the others' stdout to
  /dev/null (their stderr stays, so an error on any rank is seen).

Dropout and scheduled sampling draw from each rank's global RNG, seeded alike: the ranks draw the same stream
(rank r's slice gets the masks rank 0's slice gets), which keeps a run repeatable and exactly resumable from the
one RNG state a checkpoint holds.
"""
from __future__ import annotations

import atexit
import dataclasses
import inspect
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

# What torchrun (torch.distributed.run) sets in each process it starts; WORLD_SIZE marks a torchrun launch.
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class _DDP(DistributedDataParallel):
    """DDP whose other attributes are the model's (``init_state``, ``greedy``, ``config`` ...), so a task calls
    the wrapper exactly as it called the model — and its forward goes through DDP, which arms the gradient
    all-reduce of the next backward."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":  # not set yet (inside DDP's constructor)
                raise
            return getattr(self.module, name)


@dataclass
class Distributed:
    """This process's place in a torchrun launch, and the few collective operations the trainer needs."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device  # this rank's device: cpu, or cuda:LOCAL_RANK
    backend: str  # gloo (CPU) or nccl (CUDA)
    finished: bool = False  # a fit() ended under fit_with_stop_handler (the CLI): one run per launch

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints and writes."""
        return self.rank == 0

    # -- sharding --------------------------------------------------------------------------------------------------
    def sizes(self, batch_size: int) -> list[int]:
        """Examples of each rank's shard of a batch of ``batch_size``: equal, or one more on the first ranks."""
        q, r = divmod(batch_size, self.world_size)
        return [q + (k < r) for k in range(self.world_size)]

    def local_batch_size(self, batch_size: int) -> int:
        """The rows this rank computes of a batch of ``batch_size`` (1 for an empty shard: see ``shard``)."""
        return max(self.sizes(batch_size)[self.rank], 1)

    def check_batch_size(self, batch_size: int, name: str = "batch_size") -> None:
        """A ValueError unless the global batch splits evenly over the ranks (what makes every update the
        single-process update, and every rank's carried state the same size)."""
        W = self.world_size
        if batch_size % W == 0:
            return
        lo, hi = batch_size // W * W, (batch_size // W + 1) * W
        fix = f"{name} {lo} or {hi}" if lo else f"{name} {hi}"
        raise ValueError(f"{name} {batch_size}: the global batch is split evenly over the {W} processes of this "
                         f"torchrun launch, so it must be a multiple of {W}; use {fix}")

    def shard(self, batch, dim: int = 0):
        """(this rank's contiguous slice of ``batch`` along the batch dimension ``dim``, whether it holds any of
        the batch's examples). See ``shard`` (the function) for what is sliced. A rank whose slice would be empty
        gets the batch's first example instead, and False: its loss must count with weight 0."""
        B = batch_dim_size(batch, dim)
        if B is None:
            raise ValueError(f"cannot shard a batch of type {type(batch).__name__}: it holds no tensor with a "
                             f"dimension {dim} (the batch dimension); give the task a 'batch_dim' attribute that "
                             "names it")
        sizes = self.sizes(B)
        start = sum(sizes[:self.rank])
        if sizes[self.rank] == 0:
            return shard(batch, 0, 1, dim), False
        return shard(batch, start, start + sizes[self.rank], dim), True

    # -- collectives -----------------------------------------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` under DDP. Buffers are not re-broadcast before each forward (rnnlab's models keep none that
        change, and a broadcast in forward would make evaluation a collective too); inputs are not moved (the
        tasks move them, and keep an RNN's lengths on the CPU for packing)."""
        no_buffer_sync = ({"forward_sync_buffers": False}
                          if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                          else {"broadcast_buffers": False})  # torch < 2.13
        return _DDP(model, device_ids=None, **no_buffer_sync)

    def sum(self, values: list[float]) -> list[float]:
        """The sums over all ranks of ``values`` (float64, in one all-reduce); the same on every rank."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)  # (len(values),)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def any(self, flags: list[bool]) -> list[bool]:
        """For each flag, whether it is true on some rank (one all-reduce)."""
        t = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=self.device)  # (len(flags),)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def gather(self, state, dim: int):
        """The whole carried state from every rank's slice of it: each tensor concatenated along ``dim`` in rank
        order (every rank gets it). Nested tuples/lists are gathered leaf by leaf; None stays None."""
        if state is None:
            return None
        if isinstance(state, Tensor):
            parts = [torch.empty_like(state) for _ in range(self.world_size)]
            dist.all_gather(parts, state.contiguous())
            return torch.cat(parts, dim)  # (..., B, ...) along dim
        if isinstance(state, (tuple, list)):
            return type(state)(self.gather(s, dim) for s in state)
        raise TypeError(f"cannot gather a carried state of type {type(state).__name__} across processes; a task's "
                        "state must be tensors, or tuples/lists of them")

    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()


def batch_dim_size(batch, dim: int) -> int | None:
    """The size along ``dim`` of the first tensor in ``batch`` that has that dimension (None: no such tensor)."""
    if isinstance(batch, Tensor):
        return batch.shape[dim] if batch.dim() > dim else None
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        items = [getattr(batch, f.name) for f in dataclasses.fields(batch)]
    elif isinstance(batch, dict):
        items = list(batch.values())
    elif isinstance(batch, (tuple, list)):
        items = list(batch)
    else:
        return None
    for item in items:
        size = batch_dim_size(item, dim)
        if size is not None:
            return size
    return None


def _is_leaf_list(obj) -> bool:
    """A list/tuple of plain values (ints, strings ...): per-example data when its length is the batch's."""
    return isinstance(obj, (list, tuple)) and not any(
        isinstance(v, (Tensor, list, tuple, dict)) or dataclasses.is_dataclass(v) for v in obj)


def shard(batch, start: int, stop: int, dim: int = 0):
    """Examples [start, stop) of ``batch`` along the batch dimension ``dim``: every tensor whose size along ``dim``
    is the batch's (the first tensor's) is sliced there, as is every list of plain values of that length (e.g. a
    TagBatch's sentence indices); tuples, named tuples, lists, dicts and dataclasses are rebuilt around the slices;
    everything else is kept as it is. An LM chunk (T, B) shards along dim 1, the other rnnlab batches along 0."""
    B = batch_dim_size(batch, dim)

    def cut(obj):
        if isinstance(obj, Tensor):
            if obj.dim() > dim and obj.shape[dim] == B:
                return obj.narrow(dim, start, stop - start).contiguous()  # (..., stop - start, ...)
            return obj
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.replace(obj, **{f.name: cut(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                                               if f.init})
        if isinstance(obj, dict):
            return type(obj)((k, cut(v)) for k, v in obj.items())
        if isinstance(obj, (tuple, list)):
            if _is_leaf_list(obj):
                return obj[start:stop] if len(obj) == B else obj
            parts = [cut(v) for v in obj]
            return type(obj)(*parts) if hasattr(obj, "_fields") else type(obj)(parts)  # a named tuple takes fields
        return obj

    return cut(batch)


# -- this process ----------------------------------------------------------------------------------------------------
_current: Distributed | None = None


def current() -> Distributed | None:
    """This process's ``Distributed`` once ``setup`` found a torchrun launch; None in a single-process run."""
    return _current


def launched() -> bool:
    """Whether torchrun started this process (it sets WORLD_SIZE, among others)."""
    return "WORLD_SIZE" in os.environ


def pin_local_gpu(name: str) -> None:
    """Launched by torchrun with a CUDA device name: make cuda:LOCAL_RANK this process's current GPU before anything
    touches one — else every rank opens a context on cuda:0 first. Anything else: nothing (``setup`` checks)."""
    local = os.environ.get("LOCAL_RANK", "")
    if launched() and name.startswith("cuda") and local.isdigit() and int(local) < torch.cuda.device_count():
        torch.cuda.set_device(int(local))


def setup(device: torch.device) -> torch.device:
    """Join the torchrun launch this process belongs to, if any, and return the device this rank trains on.

    Not launched by torchrun: nothing happens and ``device`` comes back. Launched: the process group is started
    (gloo for a CPU ``device``, nccl for CUDA, where each process takes cuda:LOCAL_RANK), ranks other than 0 stop
    printing to stdout, and the group is shut down at exit. A second call returns the same device. A ValueError
    names what does not fit (a device other than cpu or cuda, a missing torchrun variable, too few GPUs)."""
    global _current
    if _current is not None:
        return _current.device
    if not launched():
        return device
    missing = [v for v in LAUNCH_VARS if v not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE is set, so this looks like a torchrun launch, but {', '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not; start the run with torchrun (e.g. 'torchrun "
                         "--nproc-per-node 2 -m rnnlab train ...'), or unset WORLD_SIZE for one process")
    try:
        rank, world, local = (int(os.environ[v]) for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        got = ", ".join(f"{v}={os.environ[v]!r}" for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        raise ValueError(f"torchrun's RANK, WORLD_SIZE and LOCAL_RANK must be integers; got {got}") from None
    if device.type == "cpu":
        backend = "gloo"
    elif device.type == "cuda":
        if device.index is not None:
            raise ValueError(f"device {device}: under torchrun each process uses the GPU of its local rank "
                             f"(cuda:LOCAL_RANK); give the device as plain 'cuda'")
        if local >= torch.cuda.device_count():
            raise ValueError(f"local rank {local} needs cuda:{local}, but this machine has "
                             f"{torch.cuda.device_count()} GPU(s); start at most that many processes per machine "
                             "(--nproc-per-node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        raise ValueError(f"device {device}: distributed training runs on cpu (gloo) or cuda (nccl); use one of them")
    if not dist.is_initialized():
        dist.init_process_group(backend)  # rendezvous at MASTER_ADDR:MASTER_PORT, from the environment
    _current = Distributed(rank, world, local, device, backend)
    if rank != 0:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the life of the process: rank 0 speaks for all
    atexit.register(shutdown)
    return device


def finish_run() -> None:
    """After a command's training (``fit_with_stop_handler``): ranks other than 0 shut down and exit here — what a
    command does after training (test evaluation, samples, result files) is rank 0's alone. Rank 0 goes on, marked
    finished: under torchrun a process trains one run."""
    if _current is None:
        return
    _current.finished = True
    if not _current.is_main:
        shutdown()
        raise SystemExit(0)


def shutdown() -> None:
    """Leave the process group (at exit, or when a rank's work is done)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
