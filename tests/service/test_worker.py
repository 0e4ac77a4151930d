"""The combine child process: results, engine failures and deaths come back as reasons."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.combine.child import CombineJob, CombineProcess, CombineResult
from biaswatch.combine.master_file import MasterInfo
from biaswatch.settings import CombineSettings


def job_for(tmp_path: Path, shapes: list[tuple[int, int]]) -> CombineJob:
    """A job over small calibrated frames of the given shapes."""
    inputs = []
    for i, shape in enumerate(shapes):
        path = tmp_path / f"cal{i}.fits"
        fits.PrimaryHDU(np.full(shape, float(i), np.float32)).writeto(path)
        inputs.append(str(path))
    info = MasterInfo(
        "cryo",
        "2026-11-24",
        1,
        "8x6-1x1",
        tuple(f"raw{i}.fits" for i in range(len(shapes))),
        CombineSettings(),
        350_000_000,
        "0" * 64,
    )
    return CombineJob(7, tuple(inputs), str(tmp_path / "m" / "master.fits"), info)


def wait(process: CombineProcess, timeout: float = 60) -> CombineResult:
    """Poll the child until it answers."""
    deadline = time.monotonic() + timeout
    while (result := process.poll()) is None:
        assert time.monotonic() < deadline, "the combine child never answered"
        time.sleep(0.05)
    return result


def test_child_writes_a_temporary_master(tmp_path: Path) -> None:
    """A successful child reports a temporary master next to the final name, with the header."""
    result = wait(CombineProcess(job_for(tmp_path, [(6, 8)] * 3)))
    assert (result.set_id, result.reason) == (7, None)
    assert result.temporary is not None
    temporary = Path(result.temporary)
    assert temporary.parent == tmp_path / "m"
    assert temporary.name.startswith(".master.fits.partial-")
    with fits.open(temporary) as hdul:
        assert hdul[0].header["NCOMBINE"] == 3
        np.testing.assert_array_equal(hdul[0].data, np.full((6, 8), 1.0, np.float32))


def test_engine_failure_is_a_reason(tmp_path: Path) -> None:
    """Frames of different shapes make the child report why, not crash or hang."""
    result = wait(CombineProcess(job_for(tmp_path, [(6, 8), (6, 8), (5, 8)])))
    assert result.temporary is None
    assert result.reason is not None
    # The shapes per segment (issue 13): which file, which segment, both shapes.
    assert "segments differ" in result.reason
    assert "cal2.fits has image (HDU 0) 5x8" in result.reason and "6x8" in result.reason


def test_killed_child_is_reported(tmp_path: Path) -> None:
    """A child killed by SIGKILL (as the OOM killer does) is reported with the signal's name."""
    process = CombineProcess(job_for(tmp_path, [(6, 8)] * 3))
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    result = wait(process)
    assert result.temporary is None
    assert result.reason == "combine process killed by SIGKILL (the OOM killer sends SIGKILL)"


def test_wake_fires_when_the_child_answers(tmp_path: Path) -> None:
    """The wake callback runs once the child has answered, before anyone polls."""
    woken = threading.Event()
    process = CombineProcess(job_for(tmp_path, [(6, 8)] * 3), wake=woken.set)
    assert woken.wait(60), "wake never called"
    assert process.poll() is not None, "woken before the result was there"


def test_wake_fires_when_the_child_dies(tmp_path: Path) -> None:
    """A child killed before answering still wakes the main loop."""
    woken = threading.Event()
    process = CombineProcess(job_for(tmp_path, [(6, 8)] * 3), wake=woken.set)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    assert woken.wait(60), "wake never called"
    result = process.poll()
    assert result is not None and result.temporary is None
