"""Where torchrun placed this process, from the environment it sets for each process it
starts (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); no torch import, so the command line can
ask before it loads torch. A process not started by torchrun is rank 0 of 1."""

from __future__ import annotations

import os


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else default


def world_size() -> int:
    """How many processes train together (1 outside torchrun)."""
    return _int_env("WORLD_SIZE", 1)


def rank() -> int:
    """This process's place among them, 0 to :func:`world_size` - 1."""
    return _int_env("RANK", 0)


def local_rank() -> int:
    """Its place among the processes of its machine: the GPU it trains on."""
    return _int_env("LOCAL_RANK", 0)


def is_secondary() -> bool:
    """True in a torchrun process other than rank 0: one that leaves reporting to rank 0."""
    return world_size() > 1 and rank() != 0
