"""One combine in a fresh child process.

A fresh process per combine, not a pool: a pool worker killed by the OOM
killer leaves ``ProcessPoolExecutor`` broken for good (apscheduler #362 shows
the same failure), while a lone child that dies only fails its own set. The
child combines, writes the temporary master and reports its path through a
pipe; the parent gives it its final name and records it.

Children are forked from a ``forkserver`` that has imported the engine and
compiled its kernel (preload.py): a spawned child spent about 2 s importing
numpy, astropy and numba and loading the kernel before its first row, which
the issue's latency target (last frame to master within the combine's time
plus 1 s) does not allow. If the server dies, multiprocessing starts a new one.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from astropy.io import fits

from biaswatch.errors import CombineFailed
from biaswatch.publish import MasterInfo, master_header, write_temporary

_CONTEXT = mp.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["biaswatch.preload"])


def start_server(numba_cache: Path) -> None:
    """Start the fork server now (not at the first combine), with numba's cache in state."""
    # Under systemd the installed package is read-only, so numba cannot cache the
    # compiled kernel next to its source: keep it in the service's state directory.
    os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache))
    from multiprocessing import forkserver

    forkserver.ensure_running()


@dataclass(frozen=True, slots=True)
class CombineJob:
    """What the child needs: inputs, settings, the final name, the header facts."""

    set_id: int
    inputs: tuple[str, ...]
    final: str
    info: MasterInfo


@dataclass(frozen=True, slots=True)
class CombineResult:
    """The child's answer: a temporary master, or why it failed."""

    set_id: int
    temporary: str | None
    reason: str | None = None
    seconds: float = 0.0  # the child's own combine and write, for the log


def run_job(job: CombineJob, conn: Connection) -> None:
    """Child entry point: combine, write the temporary master, report."""
    # The parent decides when the child stops; a terminal's Ctrl-C goes to it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Imported here: the service itself never combines, so it never loads numba.
    from biaswatch.combine import combine_files

    start = time.perf_counter()
    try:
        data = combine_files([Path(p) for p in job.inputs], job.info.settings, job.info.mem_limit)
        header = master_header(fits.getheader(job.inputs[0]), job.info)
        tmp = write_temporary(data, header, Path(job.final))
        conn.send(CombineResult(job.set_id, str(tmp), seconds=time.perf_counter() - start))
    except CombineFailed as exc:
        conn.send(CombineResult(job.set_id, None, exc.reason))
    except Exception as exc:  # the child's one boundary: report, never hang the parent
        conn.send(CombineResult(job.set_id, None, f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


class CombineProcess:
    """A running combine child, polled by the service's main loop."""

    def __init__(self, job: CombineJob) -> None:
        self.job = job
        self._conn, child_conn = _CONTEXT.Pipe(duplex=False)
        self._process = _CONTEXT.Process(
            target=run_job, args=(job, child_conn), name=f"combine-{job.set_id}", daemon=True
        )
        self._process.start()
        child_conn.close()

    def poll(self) -> CombineResult | None:
        """The result once the child has finished; None while it runs."""
        if self._conn.poll():
            with contextlib.suppress(EOFError):  # the child died before answering
                result: CombineResult = self._conn.recv()
                self._process.join(timeout=10)
                return result
        if self._process.is_alive():
            return None
        self._process.join()
        return CombineResult(self.job.set_id, None, _death(self._process.exitcode))

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


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"combine process killed by {name}{hint}"
    return f"combine process exited with status {exitcode} without a result"
