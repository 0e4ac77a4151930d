"""What runs on a Dask worker: the combine tasks, each announcing its attempts.

Imported by the worker processes (by reference from pickled tasks), never run in
the service. Each task announces "started" as it begins and "done" or "failed"
as it ends, on the event topic :data:`TOPIC`; the service turns those into the
catalog's attempt history (dask_executor.py). A run whose worker dies announces
only its start: that is how a lost attempt shows. A task's answer is the child's
(CombineResult: the temporary master and its QC); the main loop publishes it.
Tasks are pickled by reference: workers must run the service's biaswatch version.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from biaswatch.combine.child import CombineJob, CombineResult, finish_segments
from biaswatch.combine.planes import Combined, concatenate_bands
from biaswatch.errors import CombineFailed
from biaswatch.system.faults import pause_point

TOPIC = "biaswatch-attempts"
MEMORY = "MEMORY"  # the worker resource a combine asks for, in bytes ([service] mem_limit)

# One combine at a time in a worker process (one started with --nthreads > 1 would run
# several): each already spreads its rows over every core the worker may use
# (kernel.kernel_threads), and its memory model (engine.py) assumes it runs alone.
_KERNEL = threading.Lock()


@dataclass(frozen=True, slots=True)
class Split:
    """The stack does not fit one worker's budget: combine these row bands apart."""

    bands: tuple[tuple[int, int], ...]


def _this_worker() -> str:
    from distributed import get_worker

    return f"{get_worker().address} ({socket.gethostname()} pid {os.getpid()})"


def _announce(job: CombineJob, task: str, kind: str, reason: str | None = None) -> None:
    from distributed import get_worker

    # "where", not "worker": the scheduler overwrites a "worker" key with the address.
    message = {"set": job.set_id, "task": task, "where": _this_worker(), "kind": kind}
    get_worker().log_event(TOPIC, message | {"reason": reason})


def combine_task(job: CombineJob) -> CombineResult | Split:
    """The whole combine on this worker, or the bands to spread when it does not fit."""
    _announce(job, "combine", "started")
    try:
        split = _bands(job)
        if len(split.bands) > 1:
            _announce(job, "combine", "done", f"split into {len(split.bands)} bands")
            return split
        result = _combine_whole(job)
    except Exception as exc:  # the task's one boundary: an answer, never a bare error
        result = CombineResult(job.set_id, None, f"{type(exc).__name__}: {exc}")
    _announce(job, "combine", "done" if result.temporary else "failed", result.reason)
    return replace(result, worker=_this_worker())


def _combine_whole(job: CombineJob) -> CombineResult:
    from biaswatch.combine.segments import combine_segments

    start = time.perf_counter()
    try:
        with _KERNEL:
            segments = combine_segments(
                [Path(p) for p in job.inputs], job.info.settings, job.info.mem_limit
            )
    except CombineFailed as exc:
        return CombineResult(job.set_id, None, exc.reason)
    pause_point("mid_combine")  # fault tests kill the worker here (test_cluster.py)
    return finish_segments(job, segments, start)


def _bands(job: CombineJob) -> Split:
    """Row bands of a one-segment stack; one task (no split) for several segments.

    Several segments (an MEF set) are one task: its combine already goes segment by
    segment within mem_limit (segments.py), reading each in bands, and spreading
    every segment's bands over workers would need an assemble per segment for what
    a 4-extension night (30 x 4 x 2048 x 4096) does in one worker's budget.
    """
    from biaswatch.combine.engine import IMAGE_BYTES, OUTPUT_BYTES, split_rows
    from biaswatch.combine.segments import segments_of

    settings = job.info.settings
    try:
        segments = segments_of(Path(job.inputs[0]))
        if len(segments) != 1:
            return Split(((0, 0),))
        out_bytes = OUTPUT_BYTES if settings.uncertainty else IMAGE_BYTES
        shape, n = segments[0].shape, len(job.inputs)
        rows = split_rows(n, shape, job.info.mem_limit, settings.method, out_bytes)
    except (OSError, KeyError, CombineFailed):  # make_master reports it with its reason
        return Split(((0, 0),))
    return Split(tuple(rows))


def band_task(job: CombineJob, rows: tuple[int, int], task: str) -> Combined:
    """Combine image rows ``rows`` of the job's inputs (float32, with MASK and UNCERT)."""
    from biaswatch.combine.engine import combine_planes
    from biaswatch.combine.segments import segments_of

    _announce(job, task, "started")
    try:
        segment = segments_of(Path(job.inputs[0]))[0]
        settings = job.info.settings
        with _KERNEL:
            data = combine_planes(
                [Path(p) for p in job.inputs],
                settings,
                job.info.mem_limit,
                segment.hdu,
                rows=rows,
                errors=settings.uncertainty,
            )
    except Exception as exc:
        _announce(job, task, "failed", f"{type(exc).__name__}: {exc}")
        raise
    _announce(job, task, "done")
    return data


def assemble_task(job: CombineJob, *bands: Combined) -> CombineResult:
    """The bands, in order, as one master: header, QC and the temporary file."""
    from biaswatch.combine.segments import segments_of

    _announce(job, "assemble", "started")
    start = time.perf_counter()
    try:
        pause_point("mid_combine")
        whole = concatenate_bands(list(bands))
        segment = segments_of(Path(job.inputs[0]))[0]
        result = finish_segments(job, [(segment, whole)], start)
    except Exception as exc:  # the task's one boundary: an answer, never a bare error
        result = CombineResult(job.set_id, None, f"{type(exc).__name__}: {exc}")
    _announce(job, "assemble", "done" if result.temporary else "failed", result.reason)
    return replace(result, worker=_this_worker(), task="assemble")
