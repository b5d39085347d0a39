"""``mirec serve``: load a model folder, listen, and run the HTTP API on uvicorn.

The folder is loaded and checked, and the socket bound, before the server starts, so a bad
folder or a port in use is one line and exit code 2, never a half-started server. With
``workers`` > 1, uvicorn starts that many processes on the one listening socket, each
loading the folder itself (named to them by :data:`CHECKPOINT_ENV`). SIGINT and SIGTERM
stop the server after the requests in progress are answered.

By default there is one worker per CPU core, each micro-batching on one PyTorch thread:
on 2 cores two workers served about 1.6 times the requests per second of one, whose single
event loop (one GIL) is the bottleneck, and a second PyTorch thread in one worker served
11% fewer (benchmarks/README.md).
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI

from mirec.core.threads import usable_cpus
from mirec.errors import MirecError
from mirec.recommender import Recommender
from mirec.serving.app import create_app

CHECKPOINT_ENV, INDEX_ENV = "MIREC_SERVE_CHECKPOINT", "MIREC_SERVE_INDEX"
"""How the parent process names the model folder and its index to its worker processes."""
GRACEFUL_SHUTDOWN_S = 10
"""How long a stopping server waits for the requests in progress."""
BACKLOG = 2048
"""Connections the kernel queues before they are accepted (uvicorn's default)."""
SWITCH_INTERVAL_S = 0.0005
"""The GIL switch interval of a serving process (Python's default is 5 ms). The compute
thread takes the GIL back after each PyTorch kernel of a pass; while the event loop is busy
it may wait a whole interval every time, which stretches a pass of a few milliseconds to
tens. One worker at full load served about 15% more requests per second with it."""


def load_servable(checkpoint: Path, index: str | None = None) -> Recommender:
    """The model folder at ``checkpoint``, loaded with its ``index`` (a kind of ``mirec
    index``; None: exact lists); a folder that cannot be served (missing, damaged, a CTR
    model, a missing or stale index) is a MirecError."""
    recommender = Recommender.load(checkpoint)
    if recommender.config.task != "retrieval":
        raise MirecError(
            f"{checkpoint}: a {recommender.config.task} model; mirec serve serves retrieval "
            "models (recommendations over the whole catalogue)"
        )
    if index is not None:
        recommender.item_index(index)  # loaded and checked now, before the port opens
    return recommender


def serve(
    checkpoint: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int | None = None,
    index: str | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve the model folder at ``checkpoint`` on ``host:port`` (``port`` 0: any free
    port) with ``workers`` processes (default: one per CPU core) until SIGINT or SIGTERM;
    lists come from the folder's ``index`` (None: exact); ``echo`` gets the URL once the
    socket listens."""
    workers = usable_cpus() if workers is None else workers
    if workers < 1:
        raise MirecError(f"--workers {workers}: must be an integer >= 1")
    recommender = load_servable(checkpoint, index)
    listening = _listen(host, port)
    bound_host, bound_port = listening.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}"
    settings = {
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
    }
    echo(
        f"serving {recommender.name} ({recommender.dataset}, {recommender.n_items} items) at "
        f"{url} with {workers} worker(s){'' if index is None else f', {index} index'}; "
        f"API docs at {url}/docs; Ctrl-C stops"
    )
    with _stops_quietly() as stopped_by:
        if workers == 1:
            config = uvicorn.Config(_serving_app(recommender, index), **settings)
            uvicorn.Server(config).run(sockets=[listening])
        else:
            from uvicorn.supervisors import Multiprocess

            del recommender  # each worker loads its own
            os.environ[CHECKPOINT_ENV] = str(checkpoint.resolve())
            os.environ[INDEX_ENV] = index or ""
            config = uvicorn.Config(
                f"{__name__}:worker_app", factory=True, workers=workers, **settings
            )
            Multiprocess(config, sockets=[listening]).run()
    listening.close()
    echo(f"stopped ({stopped_by[0]})" if stopped_by else "stopped")


def worker_app() -> FastAPI:
    """The app of one worker process: the folder named by :data:`CHECKPOINT_ENV`, with the
    index named by :data:`INDEX_ENV`."""
    index = os.environ.get(INDEX_ENV) or None
    return _serving_app(load_servable(Path(os.environ[CHECKPOINT_ENV]), index), index)


def _serving_app(recommender: Recommender, index: str | None = None) -> FastAPI:
    """The app of a serving process, and the process set up for it: one PyTorch thread (a
    worker's passes run one after another on its compute thread; more cores serve through
    more workers), a short GIL switch interval, and everything loaded so far (libraries,
    model, catalogue: some 240,000 objects on amazon-beauty) frozen out of the garbage
    collector: its full passes over them took 80 ms each and stalled the requests in
    flight (one worker at 1,000 requests/s: p99 130-175 ms, 11-18 ms frozen)."""
    torch.set_num_threads(1)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    app = create_app(recommender, index)
    gc.freeze()
    return app


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, or a MirecError saying why not."""
    if not 0 <= port <= 65535:
        raise MirecError(f"--port {port}: must be from 0 to 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP by name: asyncio turns Nagle's algorithm off only on sockets that say
    # so, and with it on, an answer written in two parts (head, then a small body) waited
    # for the client's delayed ACK, 40 ms
    listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
        listening.listen(BACKLOG)
    except OSError as err:
        listening.close()
        raise MirecError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    return listening


@contextmanager
def _stops_quietly() -> Iterator[list[str]]:
    """uvicorn answers SIGINT and SIGTERM by shutting down gracefully and then raising the
    signal again; here that second signal is noted (its name is yielded) instead of
    killing the process, so ``mirec serve`` ends with exit code 0 and one line."""
    stopped_by: list[str] = []
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in wanted}
    for sig in wanted:
        signal.signal(sig, lambda number, frame: stopped_by.append(signal.Signals(number).name))
    try:
        yield stopped_by
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
