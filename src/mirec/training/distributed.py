"""Training in several processes: ``torchrun --nproc_per_node=N -m mirec train ...``.

torchrun starts N copies of ``mirec train`` (on each of ``--nnodes`` machines) and tells
each its rank through the environment (:mod:`mirec.core.launch`). They train one model with
PyTorch's DistributedDataParallel (DDP), over gloo on CPU and NCCL on CUDA, where rank r
trains on ``cuda:LOCAL_RANK``. Each rank:

* prepares the same data (rank 0 first, so that the others find it in the cache) and builds
  the same initial model from the seed;
* draws, every epoch, the same permutation of the training examples from the run's seeded
  generator and cuts it into the same batches of ``batch_size`` examples as one process
  does: ``batch_size`` is the global batch. Rank r takes the r-th of N contiguous slices
  of each batch; its loss is weighted by its slice's share of the batch, and DDP averages
  the gradients, so a step is the step of one process on the whole batch (a last batch
  with fewer examples than ranks is left out of that epoch);
* draws the same shared negatives as every other rank, since their generators are in the
  same state: a step's negatives are those one process draws for that batch. In-batch
  negatives are the other targets of the rank's own slice (``batch_size / N - 1``);
* lets rank 0 alone validate after each epoch, write the epoch checkpoint, test, and write
  the run folder (which only rank 0 locks); its early-stopping decision is broadcast, so
  every rank stops after the same epoch. On ``--resume`` rank 0 reads the checkpoint and
  sends its weights, optimizer state and generator states to the others.

A user error (:class:`~mirec.errors.MirecError`) that any rank meets in a step where ranks
may differ (claiming the folder, reading the data) stops every rank: rank 0 reports it, as
one line, and the others exit quietly with the same status.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mirec.core import launch
from mirec.core.device import resolve_device
from mirec.errors import ConfigError, MirecError
from mirec.training.checkpoint import Randomness

T = TypeVar("T")

WAIT_FOR_RANK_ZERO = timedelta(hours=12)
"""How long the other ranks wait at a collective for rank 0, which validates and tests
alone meanwhile (a full pass over a large catalogue takes hours)."""


class _LossForward(torch.nn.Module):
    """DDP averages the gradients of what runs through ``forward``: here the model's
    training loss."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any) -> torch.Tensor:
        return self.model.loss(*args)


@dataclass(frozen=True)
class World:
    """The processes of a torchrun job, as this one (``rank``) sees them."""

    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that evaluates and writes."""
        return self.rank == 0

    def synchronised(self, model: torch.nn.Module) -> Callable[..., torch.Tensor]:
        """``model.loss`` through DDP: its backward averages the gradients over the ranks
        (and DDP starts every rank from rank 0's weights)."""
        devices = None if self.device.type == "cpu" else [self.device]
        return DistributedDataParallel(_LossForward(model), device_ids=devices)

    def batches(self, n_examples: int, batch_size: int) -> int:
        """Global batches in an epoch of ``n_examples``: one process's count, less a last
        batch too small to give every rank an example."""
        if n_examples < self.size:
            raise ConfigError(
                f"{n_examples} training examples cannot be shared by {self.size} processes"
            )
        n_batches = math.ceil(n_examples / batch_size)
        return n_batches - 1 if 0 < n_examples % batch_size < self.size else n_batches

    def shard(self, batch: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's slice of a global batch, and the weight of its mean loss: its share
        of the batch times the ranks, so DDP's average is the whole batch's mean."""
        part = torch.tensor_split(batch, self.size)[self.rank]
        return part, len(part) * self.size / len(batch)

    def average(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the ranks."""
        total = value.clone()
        dist.all_reduce(total)
        return total / self.size

    def from_main(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object), on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def everywhere(self, action: Callable[[], T], *, main_first: bool = False) -> T:
        """``action()`` on every rank (with ``main_first``, rank 0's before the others'). A
        MirecError on any rank stops all: rank 0 raises it, naming the rank when not its
        own, and the others raise a MirecError that the command line does not print."""
        value: Any = None
        for my_turn in (self.is_main, not self.is_main) if main_first else (True,):
            error: MirecError | None = None
            if my_turn:
                try:
                    value = action()
                except MirecError as err:
                    error = err
            self._stop_on_error(error)
        return value

    def main_only(self, action: Callable[[], T]) -> T:
        """``action()`` on rank 0, its value on every rank; a MirecError it raises stops
        every rank (:meth:`everywhere`)."""
        return self.from_main(self.everywhere(action if self.is_main else lambda: None))

    def _stop_on_error(self, error: MirecError | None) -> None:
        messages: list[str | None] = [None] * self.size
        dist.all_gather_object(messages, None if error is None else str(error))
        failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
        if not failed:
            return
        if error is not None and self.is_main:
            raise error
        rank, message = failed[0]
        raise MirecError(f"rank {rank}: {message}" if self.is_main else "rank 0 reports it")

    def follow_main(
        self,
        first_epoch: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        randomness: Randomness,
    ) -> int:
        """After rank 0 resumed from its checkpoint: every rank takes rank 0's weights,
        optimizer state, generator states and first epoch, and returns that epoch."""
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)
        state = None
        if self.is_main:
            state = (first_epoch, _on_host(optimizer.state_dict()), randomness.state())
        first_epoch, optimizer_state, random_state = self.from_main(state)
        if not self.is_main:
            optimizer.load_state_dict(optimizer_state)
            randomness.restore(*random_state)
        return first_epoch

    def check_in_step(self, generator: torch.Generator) -> None:
        """Every rank's ``generator`` must be in one state (they cut the same epoch
        permutation from it); a draw whose size follows the rank's slice would break that."""
        states: list[bytes | None] = [None] * self.size
        dist.all_gather_object(states, generator.get_state().numpy().tobytes())
        if any(state != states[0] for state in states):
            raise RuntimeError(
                "the ranks' training generators diverged: a draw from the run's generator "
                "depends on the rank's share of the batch"
            )


def _on_host(value: Any) -> Any:
    """``value`` (an optimizer's state dict) with its tensors on the CPU, to send."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _on_host(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_on_host(item) for item in value)
    return value


@contextmanager
def process_group(device: str) -> Iterator[World | None]:
    """The torchrun job this process is part of, joined for the block (None outside
    torchrun, or in a job of one process: that trains as a plain run). ``device`` is the
    run's setting: on CUDA (``cuda`` or ``auto``) each rank trains on ``cuda:LOCAL_RANK``
    over NCCL, on the CPU over gloo."""
    size = launch.world_size()
    if size == 1:
        yield None
        return
    chosen = resolve_device(device)
    if chosen.type == "cuda":
        if chosen.index is not None:
            raise ConfigError(
                f"setting device={device!r}: under torchrun each process takes the GPU of its "
                "LOCAL_RANK; set device=cuda (or auto)"
            )
        local = launch.local_rank()
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local}: this machine has {torch.cuda.device_count()} CUDA "
                "device(s); start at most that many processes per node"
            )
        chosen = torch.device("cuda", local)
        torch.cuda.set_device(chosen)
        backend = "nccl"
    elif chosen.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"setting device={device!r}: torchrun trains on cpu or cuda")
    dist.init_process_group(backend, timeout=WAIT_FOR_RANK_ZERO)
    try:
        yield World(dist.get_rank(), dist.get_world_size(), chosen)
    finally:
        dist.destroy_process_group()
