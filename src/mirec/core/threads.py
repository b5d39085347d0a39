"""How many threads PyTorch computes with in a mirec process: one policy for every command.

PyTorch's default is one OpenMP thread per core of the machine, whatever share of it the
process may use. Two processes on a 2-core machine then run four busy threads on two cores,
and OpenMP's threads spin while they wait for each other: each process ran about 10 times
slower than alone. Here the count is, in order: the ``--threads`` option; else
``OMP_NUM_THREADS`` when set (torchrun sets it to 1 for each of several processes on a
node); else the physical cores among the CPUs this process may run on (its CPU affinity: a
container's cpuset or ``taskset``'s share, not the whole machine). Physical cores, as
PyTorch's own default counts them: a second hyperthread of a core adds little to dense
arithmetic.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mirec.errors import ConfigError

OMP_ENV = "OMP_NUM_THREADS"


def usable_cpus() -> int:
    """The logical CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):  # Linux: the affinity mask, cgroup cpusets included
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def usable_cores() -> int:
    """The physical cores among :func:`usable_cpus` (their count where the system does not
    say which CPUs share a core)."""
    if not hasattr(os, "sched_getaffinity"):
        return usable_cpus()
    cores = set()
    for cpu in os.sched_getaffinity(0):
        # the CPUs of one core list the same siblings, e.g. "0,8" or "0-1"
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            return usable_cpus()
    return len(cores)


def thread_count(requested: int | None = None) -> int:
    """The policy of the module docstring: ``requested`` (``--threads``), else
    ``OMP_NUM_THREADS``, else :func:`usable_cores`."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--threads {requested}: must be an integer >= 1")
        return requested
    value = os.environ.get(OMP_ENV, "").strip()
    if not value:
        return usable_cores()
    # OpenMP reads "4,2" as 4 threads at the outer level (2 in nested regions)
    first = value.split(",")[0].strip()
    if not first.isdigit() or int(first) < 1:
        raise ConfigError(f"{OMP_ENV}={value!r}: must be a positive integer, or unset")
    return int(first)


def use_threads(requested: int | None = None) -> int:
    """Set PyTorch's intra-op thread count by :func:`thread_count`; returns it."""
    count = thread_count(requested)
    torch.set_num_threads(count)
    return count
