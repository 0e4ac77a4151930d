"""The combine's side of publishing: the temporary master and the answer that names it."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.combine.child import CombineJob, finish_master
from biaswatch.combine.master_file import MasterInfo, is_temporary
from biaswatch.publish.master import quality_on_disk
from biaswatch.settings import CombineSettings
from biaswatch.testing.fits import make_bias_fits


def job_in(tmp_path: Path, frames: int = 4) -> CombineJob:
    """A job over small calibrated frames (float32, no overscan)."""
    inputs = [
        str(make_bias_fits(tmp_path / f"cal{i}.fits", overscan_cols=0, dtype="float32", seed=i))
        for i in range(frames)
    ]
    info = MasterInfo(
        "cryo",
        "2026-11-24",
        1,
        "48x40-1x1",
        tuple(f"raw{i}.fits" for i in range(frames)),
        CombineSettings(),
        350_000_000,
        "0" * 64,
    )
    return CombineJob(7, tuple(inputs), str(tmp_path / "m" / "master.fits"), info)


def test_the_answer_carries_the_qc_its_header_holds(tmp_path: Path) -> None:
    """finish_master answers with the temporary and the QC written in its header, equal."""
    job = job_in(tmp_path)
    data = np.mean([fits.getdata(p) for p in job.inputs], axis=0)
    result = finish_master(job, data, time.perf_counter())
    assert result.temporary is not None and is_temporary(Path(result.temporary))
    assert result.quality is not None and math.isfinite(result.quality.read_noise)
    assert result.quality == quality_on_disk(Path(result.temporary))
    assert result.quality.level == fits.getheader(result.temporary)["QC_LEVEL"]
