"""``mirec train --nproc-per-node N``: this process becomes torchrun's agent and starts N
processes of the same ``mirec train`` (without the option) on this machine, through
:mod:`torch.distributed.run`, so a user reaches multi-process training without writing a
torchrun line and sees mirec's one-line errors, not the agent's traceback.

The command line has validated every setting before this runs, so a bad setting is one line
from this process and no worker starts. An error the workers meet (a data file, the output
folder) is reported by rank 0 as one line and every worker exits with code 2; the agent
then exits with that code and adds nothing. A worker that crashes for another reason keeps
its own traceback on stderr, and this process says which rank ended how, in one line.
"""

from __future__ import annotations

import logging
import os
import sys

from mirec.core.threads import usable_cores
from mirec.errors import MirecError

OPTION = "--nproc-per-node"


def worker_arguments(argv: list[str]) -> list[str]:
    """``argv`` (``mirec``'s arguments) without ``--nproc-per-node N``: what each worker
    runs."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == OPTION:
            skip = True
        elif not arg.startswith(f"{OPTION}="):
            out.append(arg)
    return out


def launch_workers(processes: int, argv: list[str], threads: int | None) -> int:
    """Run ``mirec ARGV`` in ``processes`` processes on this machine under
    torch.distributed's elastic agent; the exit code to end with (0 when all succeed)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # the agent's own notices (the OMP_NUM_THREADS default, closing signals) are not the
    # user's business; a failure is reported below
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        # each worker its share of the cores, as torchrun's users are told to set
        os.environ["OMP_NUM_THREADS"] = str(max(1, usable_cores() // processes))
    agent = [
        f"--nproc-per-node={processes}",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=localhost:0",  # a free port: several jobs may share the machine
        "--no-python",
        sys.executable,
        "-m",
        "mirec",
        *worker_arguments(argv),
    ]
    try:
        run(parse_args(agent))
    except ChildFailedError as err:
        if any(f.exitcode == MirecError.exit_code for f in err.failures.values()):
            return MirecError.exit_code  # a user error: rank 0 has printed its one line
        rank, failure = err.get_first_failure()
        how = (
            f"was killed by signal {failure.signal_name()}"
            if failure.exitcode < 0
            else f"exited with code {failure.exitcode}"
        )
        raise MirecError(
            f"training process {rank} of {processes} {how}; its output is above"
        ) from None
    return 0
