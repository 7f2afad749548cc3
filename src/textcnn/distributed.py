"""Several training processes under PyTorch's launcher: ``torchrun --nproc-per-node N -m textcnn train ...``.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK in each process; :func:`init` then joins the
process group (gloo on the CPU, nccl on CUDA GPUs) and every rank:

* reads the same files and builds the same vocabulary (a deterministic function of the file:
  most frequent first, ties by first appearance), then checks with the others that the config,
  vocabulary and classes hash alike, so a rank that read another file stops with a clear error
  instead of training a different model silently. Building on each rank costs one tokenizing pass
  per rank but no transfer of a 100,000-word vocabulary, and needs no shared filesystem;
* draws the same seeded, length-bucketed batch order and trains on every WORLD_SIZE-th batch
  from its rank on (the last ``n_batches % WORLD_SIZE`` batches of an epoch's order are left out,
  so every rank takes the same number of steps); DistributedDataParallel averages the gradients,
  so one step sees WORLD_SIZE * batch_size texts;
* scores the dev set; rank 0's scores decide early stopping for all.

Only rank 0 prints, writes checkpoints and saves the model. On gloo the embedding gradients stay
sparse (DDP all-reduces sparse tensors there); nccl has no sparse all-reduce, so on CUDA the
embedding tables get dense gradients and Adam (a note is printed).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from .errors import TrainingError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        import torch.distributed as dist

        return dist.get_backend() if self.size > 1 else ""


def launched() -> bool:
    """Whether torchrun (or another launcher setting WORLD_SIZE) started this process with others."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str) -> World:
    """Joins the process group when launched by torchrun (once); the World this process is in."""
    if not launched():
        return World()
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return current()


def current() -> World:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def finish() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def local_first(world: World):
    """Runs the block on each node's local rank 0 first, then on the other ranks (which find its cache)."""
    if world.size == 1:
        yield
        return
    import torch.distributed as dist

    if world.local_rank != 0:
        dist.barrier()
    yield
    if world.local_rank == 0:
        dist.barrier()


def local_device(device: torch.device, world: World) -> torch.device:
    """Under torchrun each rank takes its own GPU: 'cuda' means cuda:LOCAL_RANK."""
    if device.type == "cuda" and device.index is None and world.size > 1:
        return torch.device("cuda", world.local_rank)
    return device


def shard(batches: list, world: World) -> list:
    """This rank's batches of the epoch's order: every size-th from rank on, the same count on every rank."""
    if world.size == 1:
        return batches
    per_rank = len(batches) // world.size
    return batches[world.rank :: world.size][:per_rank]


def check_same(fingerprint: str, what: str, world: World) -> None:
    """Stops every rank when the ranks disagree on ``fingerprint`` (e.g. they read different files)."""
    if world.size == 1:
        return
    import torch.distributed as dist

    seen: list = [None] * world.size
    dist.all_gather_object(seen, fingerprint)
    odd = [r for r, f in enumerate(seen) if f != seen[0]]
    if odd:
        raise TrainingError(f"Rank(s) {', '.join(map(str, odd))} built another {what} than rank 0: the processes did "
                            "not read the same training data or flags. Give every node the same files and command.")


def from_main(value, world: World):
    """Rank 0's ``value`` on every rank."""
    if world.size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _Forward(nn.Module):
    """Wraps a training forward function as a module, so DistributedDataParallel can call it."""

    def __init__(self, model: nn.Module, forward) -> None:
        super().__init__()
        self.model, self.forward_fn = model, forward

    def forward(self, ids: torch.Tensor, vectors: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_fn(ids) if vectors is None else self.forward_fn(ids, vectors)


def parallel_forward(model: nn.Module, forward, world: World):
    """``forward`` run through DistributedDataParallel (gradients averaged over ranks); as is for one rank."""
    if world.size == 1:
        return forward
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_Forward(model, forward), device_ids=ids)


def sparse_gradients_supported(world: World) -> bool:
    return world.size == 1 or world.backend == "gloo"
