"""``mirec serve``: load a model folder, listen, and run the HTTP API on uvicorn.

The folder is loaded and checked, and the socket bound, before the server starts, so a bad
folder or a port in use is one line and exit code 2, never a half-started server. With
``workers`` > 1, a :class:`Supervisor` starts that many processes on the one listening
socket, each loading the folder itself and checking that its files are those the service
started with; the workers die with the supervisor (``kill -9`` included), and one that
cannot start is not restarted forever. SIGINT and SIGTERM stop the server after the
requests in progress are answered.

By default there is one worker per CPU core, each micro-batching on one PyTorch thread:
on 2 cores two workers served about 1.6 times the requests per second of one, whose single
event loop (one GIL) is the bottleneck, and a second PyTorch thread in one worker served
11% fewer (benchmarks/README.md).
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI

from mirec.core.threads import usable_cpus
from mirec.errors import MirecError
from mirec.recommender import Recommender, load
from mirec.serving.app import create_app

log = logging.getLogger("mirec.serve")

MAX_START_FAILURES = 3
"""Starts in a row a worker may fail (exit before its model is loaded) before its place is
left empty: a folder that cannot be loaded fails the same way every time, and a restart
loop would print the same traceback forever."""
RESTART_DELAY_S = 1.0
"""The wait before restarting a worker that failed to start, doubled after each failure."""
REFUSED = 4
"""A worker's exit code when it refuses to serve (the folder changed, or cannot be loaded);
it has sent its reason to the supervisor, which logs it."""
READY = "ready"
"""What a worker sends its supervisor once its model is loaded."""
POLL_S = 0.5
"""How often the supervisor looks at its workers when none reports."""
PR_SET_PDEATHSIG = 1
"""prctl's option for the signal a process gets when its parent dies (linux/prctl.h)."""
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
    recommender = load(checkpoint)  # either task: a CTR folder is refused for serve below
    if not isinstance(recommender, Recommender):
        raise MirecError(
            f"{checkpoint}: a {recommender.info.task} model; mirec serve serves retrieval "
            "models (recommendations over the whole catalogue)"
        )
    if index is not None:
        # loaded and checked now, before the port opens (recommend(index=...) would load it
        # only at the first request)
        recommender._item_index(index)
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
    info = recommender.info
    echo(
        f"serving {info.name} ({info.dataset}, {info.n_items} items) at "
        f"{url} with {workers} worker(s){'' if index is None else f', {index} index'}; "
        f"API docs at {url}/docs; Ctrl-C stops"
    )
    with _stops_quietly() as stopped_by:
        if workers == 1:
            config = uvicorn.Config(_serving_app(recommender, index), **settings)
            uvicorn.Server(config).run(sockets=[listening])
        else:
            del recommender  # each worker loads its own
            supervisor = Supervisor(
                checkpoint.resolve(), index, workers, listening, settings, stopped_by, echo
            )
            supervisor.run()
    listening.close()
    echo(f"stopped ({stopped_by[0]})" if stopped_by else "stopped")


class Supervisor:
    """The parent process of a service with several workers: starts them on the one
    listening socket, restarts one that dies, and stops them all on SIGINT or SIGTERM.

    * **The workers die with it.** Each worker asks Linux to send it SIGTERM when its
      supervisor dies (``prctl(PR_SET_PDEATHSIG)``) and watches its parent itself (the end
      of multiprocessing's pipe to it, or the parent pid where there is none), so a
      supervisor killed with ``kill -9`` leaves no worker answering on the port: each ends
      its requests in progress and exits.
    * **One model.** The supervisor records the SHA-256 of every file a worker reads
      (:func:`folder_fingerprint`); a worker checks them before and after it loads the
      folder and refuses to serve when they differ (``mirec train --overwrite`` into the
      served folder), with one line in the log: the running workers keep serving the
      model the service started with, never beside another one. Restarting ``mirec
      serve`` serves the new model.
    * **No restart loop.** A worker that refuses is not restarted; one that dies before its
      model is loaded is restarted at most :data:`MAX_START_FAILURES` times in a row (after
      1, 2, 4 s). Then its place stays empty and ``/health`` answers 503 on the others
      (the service is degraded); when no worker is left, the service stops with one line
      (a MirecError, exit code 2 from the command line).
    """

    def __init__(
        self,
        checkpoint: Path,
        index: str | None,
        workers: int,
        listening: socket.socket,
        settings: dict[str, Any],
        stopped_by: list[str],
        echo: Callable[[str], None] = print,
    ) -> None:
        self.checkpoint, self.index, self.echo = checkpoint, index, echo
        self.all_ready = False
        self.listening, self.settings, self.stopped_by = listening, settings, stopped_by
        self.fingerprint = _readable_fingerprint(checkpoint, index)
        # spawn, not fork: a forked worker would inherit the supervisor's threads and
        # torch state, and uvicorn's own workers spawn too
        self.context = multiprocessing.get_context("spawn")
        self.slots = [_Slot(number) for number in range(1, workers + 1)]
        self.stopped_slots = self.context.RawValue("i", 0)  # read by every worker's /health
        self.last_reason = ""

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM (noted in ``stopped_by``); a MirecError when no
        worker is left."""
        try:
            for slot in self.slots:
                self._start(slot)
            while not self.stopped_by:
                self._watch()
                if all(slot.given_up for slot in self.slots):
                    raise MirecError(
                        f"no worker of the service is left ({self.last_reason}); "
                        "mirec serve stopped"
                    )
        finally:
            self._stop_all()

    def _start(self, slot: _Slot) -> None:
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker_main,
            name=f"mirec-serve-worker-{slot.number}",
            kwargs={
                "checkpoint": self.checkpoint,
                "index": self.index,
                "expected": self.fingerprint,
                "sockets": [self.listening],
                "settings": self.settings,
                "report": writer,
                "stopped_slots": self.stopped_slots,
                "workers": len(self.slots),
                "parent_pid": os.getpid(),
            },
        )
        # started from this (the main) thread: Linux sends a worker its death signal when
        # the thread that started it ends, not only the process
        process.start()
        writer.close()  # the worker's end: EOF here once the worker has gone
        slot.process, slot.report, slot.ready, slot.restart_at = process, reader, False, None
        slot.starts += 1

    def _watch(self) -> None:
        """Wait up to :data:`POLL_S` for a worker to report or exit, and deal with it."""
        waiting = [slot.process.sentinel for slot in self.slots if slot.process is not None]
        waiting += [slot.report for slot in self.slots if slot.report is not None]
        multiprocessing.connection.wait(waiting, timeout=POLL_S)
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None:
                if slot.restart_at is not None and now >= slot.restart_at and not self.stopped_by:
                    self._start(slot)
                continue
            self._read_report(slot)
            if slot.process.exitcode is not None and not self.stopped_by:
                self._reap(slot)

    def _read_report(self, slot: _Slot) -> None:
        """The worker's one message, if it has come: READY, or why it refuses to serve."""
        if slot.report is None or not slot.report.poll():
            return
        try:
            message = slot.report.recv()
        except (EOFError, OSError):
            message = None  # it exited without a word
        slot.report.close()
        slot.report = None
        if message == READY:
            slot.ready, slot.failures = True, 0
            if slot.starts > 1:
                log.warning("mirec serve: worker %d (pid %s) restarted", slot.number,
                            slot.process.pid if slot.process else "?")  # fmt: skip
            if not self.all_ready and all(other.ready for other in self.slots):
                self.all_ready = True
                self.echo(f"all {len(self.slots)} workers ready")
        elif isinstance(message, str):
            slot.reason = message

    def _reap(self, slot: _Slot) -> None:
        """A worker has exited (the service is not stopping): join it, then restart it or
        give its place up."""
        assert slot.process is not None
        slot.process.join()
        pid, code = slot.process.pid, slot.process.exitcode
        self._read_report(slot)
        if slot.report is not None:
            slot.report.close()
            slot.report = None
        slot.process.close()
        slot.process = None
        who = f"mirec serve: worker {slot.number} (pid {pid})"
        if code == REFUSED:
            self._give_up(slot, f"{who} refused to serve: {slot.reason}")
        elif not slot.ready:
            slot.failures += 1
            how = _exit_description(code)
            if slot.failures >= MAX_START_FAILURES:
                self._give_up(
                    slot,
                    f"{who} {how} before its model was loaded, {slot.failures} times in a "
                    "row; its place stays empty (see the error above)",
                )
            else:
                delay = RESTART_DELAY_S * 2 ** (slot.failures - 1)
                log.warning("%s %s before its model was loaded; restarting it in %g s",
                            who, how, delay)  # fmt: skip
                slot.restart_at = time.monotonic() + delay
        else:
            log.warning("%s %s; restarting it", who, _exit_description(code))
            self._start(slot)

    def _give_up(self, slot: _Slot, line: str) -> None:
        slot.given_up = True
        self.stopped_slots.value += 1
        self.last_reason = line.removeprefix("mirec serve: ")
        log.error("%s", line)

    def _stop_all(self) -> None:
        """SIGTERM to every worker (each answers its requests in progress), SIGKILL to any
        still there after the graceful shutdown's time, and every one joined."""
        running = [slot.process for slot in self.slots if slot.process is not None]
        for process in running:
            if process.exitcode is None:
                with suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACEFUL_SHUTDOWN_S + 5
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join()
        for slot in self.slots:
            if slot.report is not None:
                slot.report.close()
            slot.process = slot.report = None


@dataclass
class _Slot:
    """One worker's place in the service, and what became of its starts."""

    number: int
    process: Any = None
    report: Any = None
    """The supervisor's end of the worker's pipe, until its one message has come."""
    ready: bool = False
    starts: int = 0
    failures: int = 0
    """Starts in a row that ended before the model was loaded."""
    restart_at: float | None = None
    given_up: bool = False
    reason: str = "it gave no reason"


def _exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        with suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def folder_fingerprint(folder: Path, index: str | None = None) -> dict[str, str]:
    """The SHA-256 of each file a serving worker reads: the model folder's files, its
    ``metrics.json`` and, with ``index``, that index and its description ("missing" for a
    file that is not there). OSError when one cannot be read."""
    from mirec.models.folder import FOLDER_FILES, METRICS_FILE
    from mirec.retrieval.ann import index_paths

    names = [*FOLDER_FILES, METRICS_FILE]
    if index is not None:
        names += [path.name for path in index_paths(folder, index)]
    digests = {}
    for name in names:
        try:
            with open(folder / name, "rb") as f:
                digests[name] = hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            digests[name] = "missing"
    return digests


def _readable_fingerprint(folder: Path, index: str | None) -> dict[str, str]:
    try:
        return folder_fingerprint(folder, index)
    except OSError as err:
        raise MirecError(
            f"{err.filename or folder}: cannot be read ({err.strerror or err})"
        ) from err


def _load_unchanged(checkpoint: Path, index: str | None, expected: dict[str, str]) -> Recommender:
    """The folder loaded as :func:`load_servable` does, provided its files are still those
    of ``expected`` (:func:`folder_fingerprint`) before and after loading; else a
    MirecError naming the files that changed."""
    for when in ("before", "after"):
        changed = [
            name
            for name, digest in _readable_fingerprint(checkpoint, index).items()
            if expected.get(name) != digest
        ]
        if changed:
            raise MirecError(
                f"{checkpoint}: the model folder changed since the service started "
                f"({', '.join(changed)}); a new worker would serve another model beside the "
                "running ones, so it is not started; restart mirec serve to serve the new model"
            )
        if when == "before":
            recommender = load_servable(checkpoint, index)
    return recommender


def _worker_main(
    *,
    checkpoint: Path,
    index: str | None,
    expected: dict[str, str],
    sockets: list[socket.socket],
    settings: dict[str, Any],
    report: Any,
    stopped_slots: Any,
    workers: int,
    parent_pid: int,
) -> None:
    """A worker process of :class:`Supervisor`: load the folder (unchanged), say READY on
    ``report``, serve on ``sockets`` until SIGTERM. A folder that changed or cannot be
    loaded: its one-line reason on ``report``, and exit code :data:`REFUSED`."""
    _die_with_parent(parent_pid)
    try:
        recommender = _load_unchanged(checkpoint, index, expected)
    except MirecError as err:
        report.send(str(err))
        report.close()
        sys.exit(REFUSED)
    report.send(READY)
    report.close()

    def degraded() -> str | None:
        stopped = stopped_slots.value
        if not stopped:
            return None
        return (
            f"degraded: {stopped} of {workers} workers stopped and were not restarted (see "
            "the log of mirec serve); restart the service"
        )

    app = _serving_app(recommender, index, degraded)
    with _stops_quietly():
        uvicorn.Server(uvicorn.Config(app, **settings)).run(sockets=sockets)


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker end when its supervisor does, even by ``kill -9``: Linux's
    ``PR_SET_PDEATHSIG`` (SIGTERM, so requests in progress are answered) where ctypes
    reaches prctl, and everywhere a thread that waits for the parent to go."""
    if sys.platform.startswith("linux"):
        # a libc without prctl: the thread below does it alone
        with suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
        os._exit(1)
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="mirec-parent-watch", daemon=True
    ).start()


def _watch_parent(parent_pid: int) -> None:
    """Wait for the supervisor to end, then stop this worker: SIGTERM (uvicorn answers the
    requests in progress), and if that has not ended it after the graceful shutdown's time,
    an immediate exit."""
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is not None:
        # the end of the pipe the supervisor writes: it reads as closed once it has died
        multiprocessing.connection.wait([sentinel])
    else:
        while os.getppid() == parent_pid:
            time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACEFUL_SHUTDOWN_S + 5)
    os._exit(1)


def _serving_app(
    recommender: Recommender,
    index: str | None = None,
    degraded: Callable[[], str | None] | None = None,
) -> FastAPI:
    """The app of a serving process, and the process set up for it: one PyTorch thread (a
    worker's passes run one after another on its compute thread; more cores serve through
    more workers), a short GIL switch interval, and everything loaded so far (libraries,
    model, catalogue: some 240,000 objects on amazon-beauty) frozen out of the garbage
    collector: its full passes over them took 80 ms each and stalled the requests in
    flight (one worker at 1,000 requests/s: p99 130-175 ms, 11-18 ms frozen)."""
    torch.set_num_threads(1)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    app = create_app(recommender, index, degraded)
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
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    previous = {sig: signal.getsignal(sig) for sig in (*wanted, hangup) if sig is not None}
    for sig in wanted:
        signal.signal(sig, lambda number, frame: stopped_by.append(signal.Signals(number).name))
    if hangup is not None:
        signal.signal(hangup, _hung_up(stopped_by))
    try:
        yield stopped_by
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _hung_up(stopped_by: list[str]) -> Callable[[int, Any], None]:
    """SIGHUP (the terminal closed, or ``kill -HUP``) stops the server as SIGTERM does:
    requests in progress are answered, the workers stopped and reaped, and the stop named
    in one line. Its default action ended the process at once, without a word, dropping
    the requests in flight."""

    def handler(number: int, frame: Any) -> None:
        if not stopped_by:
            stopped_by.append("SIGHUP")
        # uvicorn's own handler (while it serves) or the one above (the supervisor) takes it
        signal.raise_signal(signal.SIGTERM)

    return handler
