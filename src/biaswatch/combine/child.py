"""One combine in a fresh child process.

A fresh process per combine, not a pool: a pool worker killed by the OOM
killer leaves ``ProcessPoolExecutor`` broken for good (apscheduler #362 shows
the same failure), while a lone child that dies only fails its own set. The
child combines, writes the temporary master (combine/master_file.py) and reports
its path and QC through a pipe; the parent gives it its final name, judges and
records it (publish/master.py). The child imports no catalog module.

Children are forked from a ``forkserver`` that has imported the engine and run
its kernel once (combine/preload.py): a spawned child spent about 2 s importing
numpy, astropy and (then) numba and loading the kernel before its first row, which
the issue's latency target (last frame to master within the combine's time
plus 1 s) does not allow. If the server dies, multiprocessing starts a new one.
The service starts no combine before a probe child has run (start_server; a failed
probe is tried again later), and the parent is woken as soon as a child answers or
dies (CombineProcess's wake). At a stop the server is ended and reaped (ForkServer.stop).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import forkserver, resource_tracker
from multiprocessing import util as mp_util
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from astropy.io import fits

from biaswatch.combine.master_file import (
    MasterInfo,
    MasterPart,
    master_hdus,
    master_header,
    write_hdus,
)
from biaswatch.combine.planes import Combined, SegmentHDU
from biaswatch.combine.segment_qc import SegmentCards, aggregate_qc, as_written, segment_cards
from biaswatch.errors import CombineFailed
from biaswatch.rules.qc import MasterQC, master_cards
from biaswatch.system.faults import crash_point, pause_point

_CONTEXT = mp.get_context("forkserver")
# biaswatch.combine.preload imports this module too, so a child finds run_job's module,
# astropy and the master file's code already imported: it started 0.45 s sooner than
# when only the engine was preloaded (CombineProcess on 10 frames of 4096 x 4096, start
# to combine). A child still runs the parent's main script (multiprocessing.spawn.prepare);
# for the installed `biaswatch` script that imports biaswatch.cli, 2 ms on top of the preload.
_CONTEXT.set_forkserver_preload(["biaswatch.combine.preload"])


# After a failed start (the server died preloading: killed by the OOM killer while
# it imports, say), the next try comes this long after, doubling up to the cap:
# soon for a one-off, at most one log line per 5 min for a lasting fault (our choice).
RETRY_FIRST_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0
# At a stop, multiprocessing's resource tracker leaves within this once its pipe closes
# (it first removes what children leaked); if it stays longer it is killed. The fork
# server is killed at once: it holds nothing, and its interpreter took 2 s to exit on
# its own (numba and astropy loaded, before issue 14), time a stop under systemd should
# not spend.
STOP_SECONDS = 5.0


def start_server(ready: Callable[[float], None]) -> ForkServer:
    """Start the fork server in the background; call ``ready(seconds)`` once it forks.

    The server imports the engine (numpy, astropy) and runs the kernel once before it
    serves its first child: about a second, more on a cold disk. Starting a process meanwhile
    blocks the caller until then (Popen waits for the child's pid), so a probe child is
    started from a thread here, and the service starts no combine before ``ready``:
    its main loop keeps answering SIGTERM and the watchdog meanwhile.
    A probe that fails is logged and tried again later; ``ready`` waits for one that ran.
    """
    server = ForkServer(ready)
    server.start()
    return server


class ForkServer:
    """The fork server's probe thread, its retries, and the server's end."""

    def __init__(self, ready: Callable[[float], None]) -> None:
        self._ready = ready
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._probe, name="combine-server", daemon=True)

    def start(self) -> None:
        """Probe the server from a thread until a probe child has run."""
        self._thread.start()

    def _probe(self) -> None:
        log = structlog.get_logger(__name__)
        attempt, wait_seconds = 1, RETRY_FIRST_SECONDS
        while not self._stopping.is_set():
            start = time.perf_counter()
            try:  # one probe: the server starts (multiprocessing restarts a dead one)
                probe = _CONTEXT.Process(target=_nothing, name="combine-probe", daemon=True)
                probe.start()
                probe.join()
                if probe.exitcode != 0:
                    raise RuntimeError(f"the probe child exited with status {probe.exitcode}")
            except Exception as exc:  # the probe's one boundary: logged, tried again
                if self._stopping.is_set():
                    return  # the stop ended the server under the probe
                log.error(
                    "combine.server_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    attempt=attempt,
                    retry_in=wait_seconds,
                    action="combines wait; if this repeats, see the service's stderr (journal)",
                )
                self._stopping.wait(wait_seconds)
                attempt, wait_seconds = attempt + 1, min(2 * wait_seconds, RETRY_MAX_SECONDS)
                continue
            self._ready(time.perf_counter() - start)
            return

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """End the server and the resource tracker and reap them (at a stop or reload).

        Left alone, both outlive the service: after the re-execution of a reload they
        exit as children of a program that never waits for them, two zombies per reload.
        """
        self._stopping.set()
        stop_helpers(timeout)
        self._thread.join(timeout)
        stop_helpers(timeout)  # a server the probe started meanwhile


def stop_helpers(timeout: float = STOP_SECONDS) -> None:
    """End multiprocessing's fork server and resource tracker, if running, and reap them."""
    # Private, but the attributes CPython's own tests use to stop them (3.8 to 3.13).
    server: Any = forkserver._forkserver
    with server._lock:
        pid, fd = server._forkserver_pid, server._forkserver_alive_fd
        address = server._forkserver_address
        server._forkserver_pid = server._forkserver_alive_fd = None
        server._forkserver_address = None
    _end(pid, fd, 0.0)
    if address and not mp_util.is_abstract_socket_namespace(address):
        with contextlib.suppress(OSError):
            os.unlink(address)
    tracker: Any = resource_tracker._resource_tracker
    with tracker._lock:
        pid, fd = tracker._pid, tracker._fd
        tracker._pid = tracker._fd = None
    _end(pid, fd, timeout)


def _end(pid: int | None, fd: int | None, grace: float) -> None:
    """Close a helper's pipe (it leaves at end of file), wait ``grace``, then kill and reap."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
    if pid is None:
        return
    deadline = time.monotonic() + grace
    try:
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.05)
    except ChildProcessError:
        pass  # already reaped (multiprocessing reaps a dead server when it restarts it)


def _nothing() -> None:
    """The probe child's work: none. That it ran shows the server has preloaded."""


@dataclass(frozen=True, slots=True)
class CombineJob:
    """What the child needs: inputs, settings, the final name, the header facts."""

    set_id: int
    inputs: tuple[str, ...]
    final: str
    info: MasterInfo


@dataclass(frozen=True, slots=True)
class CombineResult:
    """The child's answer: a temporary master and its QC, or why it failed.

    The QC travels in the answer (it is in the master's header too), so the main
    loop judges the master without reading its file back.
    """

    set_id: int
    temporary: str | None
    reason: str | None = None
    quality: MasterQC | None = None  # the master's QC, with the temporary
    seconds: float = 0.0  # the child's own combine and write, for the log
    startup: float = 0.0  # from the parent starting the child to the child's first line
    worker: str = ""  # where it ran: "pid N" locally, the worker's address on a cluster
    task: str = "combine"  # which task answered: "combine", or "assemble" after bands
    # Each segment's (or amplifier region's) QC, in order; empty for a one-segment
    # master, whose QC is ``quality`` (which otherwise aggregates these).
    segments: tuple[tuple[str, MasterQC], ...] = ()


def run_job(job: CombineJob, conn: Connection, submitted: float) -> None:
    """Child entry point: combine, write the temporary master, report."""
    startup = time.time() - submitted  # wall clock: the parent's clock is another process's
    # The parent decides when the child stops; a terminal's Ctrl-C goes to it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = make_master(job)
        crash_point("after_temporary")
        conn.send(dataclasses.replace(result, startup=startup, worker=f"pid {os.getpid()}"))
    except Exception as exc:  # the child's one boundary: report, never hang the parent
        conn.send(CombineResult(job.set_id, None, f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def make_master(job: CombineJob) -> CombineResult:
    """Combine the job's inputs and write the temporary master (in a child or on a worker)."""
    # Imported here: the service itself never combines, so it never loads the engine.
    from biaswatch.combine.segments import combine_segments

    start = time.perf_counter()
    try:
        paths = [Path(p) for p in job.inputs]
        segments = combine_segments(paths, job.info.settings, job.info.mem_limit)
        pause_point("mid_combine")  # fault tests kill the child here (test_faults.py)
        return finish_segments(job, segments, start)
    except CombineFailed as exc:
        return CombineResult(job.set_id, None, exc.reason)


def finish_master(job: CombineJob, data: np.ndarray, start: float) -> CombineResult:
    """A one-image master from its image alone (no MASK or UNCERT): see finish_segments."""
    image = np.asarray(data, dtype=np.float32)
    rows, cols = image.shape
    return finish_segments(job, [(SegmentHDU("", 0, (rows, cols)), Combined(image))], start)


def finish_segments(
    job: CombineJob, segments: Sequence[tuple[SegmentHDU, Combined]], start: float
) -> CombineResult:
    """Headers, QC cards and the temporary file for combined segments; the result to report.

    The layout is master_file.master_hdus's; the QC per segment and amplifier region
    segment_qc's. The QC reported is the header's, rounded as written: the catalog
    then holds what the file says, the same values a master adopted after a crash gets
    from its header.
    """
    settings = job.info.settings
    # The first input's headers, read once: the master's, each segment's and its QC's.
    with fits.open(job.inputs[0]) as first:
        header = master_header(first[0].header.copy(), job.info)
        headers = {segment.hdu: first[segment.hdu].header.copy() for segment, _ in segments}
    measured = [
        (
            segment,
            combined,
            segment_cards(combined.data, job.inputs, headers[segment.hdu], segment.hdu, settings),
        )
        for segment, combined in segments
    ]
    if len(measured) == 1 and not measured[0][0].name:
        _, combined, qc = measured[0]
        _put(header, qc.cards())
        parts = [MasterPart("", header, combined.data, combined.mask, combined.uncertainty)]
        quality, entries = qc.quality, qc.amplifiers
    else:
        parts = [
            MasterPart(
                segment.name,
                segment_header(headers[segment.hdu], qc),
                combined.data,
                combined.mask,
                combined.uncertainty,
            )
            for segment, combined, qc in measured
        ]
        entries = tuple(entry for segment, _, qc in measured for entry in _entries(segment, qc))
        quality = as_written(aggregate_qc([qc for _, qc in entries]))
        _put(header, master_cards(quality))
    tmp = write_hdus(master_hdus(header, parts), Path(job.final), job.set_id)
    seconds = time.perf_counter() - start
    return CombineResult(
        job.set_id, str(tmp), quality=quality, seconds=seconds, segments=tuple(entries)
    )


def _entries(segment: SegmentHDU, qc: SegmentCards) -> list[tuple[str, MasterQC]]:
    """A segment's QC entries: itself, or each amplifier region as ``SEGMENT.AMP``."""
    if not qc.amplifiers:
        return [(segment.name, qc.quality)]
    return [(f"{segment.name}.{amp}", amp_qc) for amp, amp_qc in qc.amplifiers]


def _put(header: fits.Header, cards: Sequence[tuple[str, object, str]]) -> None:
    for key, value, comment in cards:
        header[key] = (value, comment)


# Keywords of a calibrated segment's header that do not belong on the master's
# segment: the structure (astropy writes its own), the name (set from the segment),
# and per-frame checksums.
_STRUCTURE = ("XTENSION", "EXTNAME", "PCOUNT", "GCOUNT", "CHECKSUM", "DATASUM")


def segment_header(calibrated: fits.Header, qc: SegmentCards) -> fits.Header:
    """A master segment's header: its first input's, BUNIT and the segment's QC cards."""
    header = calibrated.copy()
    for key in _STRUCTURE:
        header.remove(key, ignore_missing=True, remove_all=True)
    # CCDData.read(master, hdu=NAME) takes the unit from this header alone.
    header["BUNIT"] = ("adu", "pixel unit")
    _put(header, qc.cards())
    return header


class CombineProcess:
    """A running combine child, polled by the service's main loop."""

    def __init__(self, job: CombineJob, wake: Callable[[], None] | None = None) -> None:
        self.job = job
        self._conn, child_conn = _CONTEXT.Pipe(duplex=False)
        self._process = _CONTEXT.Process(
            target=run_job,
            args=(job, child_conn, time.time()),
            name=f"combine-{job.set_id}",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        if wake is not None:
            # The main loop sleeps up to poll_seconds between turns: wake it when the
            # child answers or dies, so the master is published at once.
            threading.Thread(
                target=self._wake_when_done, args=(wake,), name="combine-wait", daemon=True
            ).start()

    def _wake_when_done(self, wake: Callable[[], None]) -> None:
        with contextlib.suppress(OSError, ValueError):  # stop() closed the pipe first
            wait([self._conn, self._process.sentinel])
        wake()

    def poll(self) -> CombineResult | None:
        """The result once the child has finished; None while it runs."""
        if self._conn.poll():
            result: CombineResult | None = None
            with contextlib.suppress(EOFError):  # the child died before answering
                result = self._conn.recv()
            # An answer or end-of-file: the child is leaving, so this join is short. It
            # also lets a death be told at once, without waiting for another turn.
            self._process.join(timeout=10)
            if result is not None:
                return result
        if self._process.is_alive():
            return None
        self._process.join()
        return CombineResult(self.job.set_id, None, death_reason(self._process.exitcode))

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._process.pid

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the child (SIGTERM, then SIGKILL) and wait for it."""
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def death_reason(exitcode: int | None) -> str:
    """Why a child that exited with ``exitcode`` gave no answer (the set's failure reason)."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"combine process killed by {name}{hint}"
    return f"combine process exited with status {exitcode} without a result"
