"""The combine's side of publishing: the temporary master and the answer that names it."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.combine.child import CombineJob, finish_master
from biaswatch.combine.master_file import (
    MasterInfo,
    MasterPart,
    big_endian,
    is_temporary,
    master_hdus,
)
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


def test_a_master_written_from_swapped_planes_has_astropys_bytes(tmp_path: Path) -> None:
    """master_hdus's in-place big-endian planes write the bytes astropy writes from native ones."""
    rng = np.random.default_rng(3)
    data = rng.normal(0.0, 8.0, (37, 41)).astype(np.float32)
    mask = (rng.random((37, 41)) < 0.1).astype(np.uint8)
    unc = rng.random((37, 41)).astype(np.float32)
    header = fits.Header([("DATE", "2026-12-04T00:00:00")])
    utype = fits.Header([("UTYPE", "StdDevUncertainty")])
    expected = fits.HDUList(
        [
            fits.PrimaryHDU(data.copy(), header),
            fits.ImageHDU(mask, name="MASK"),
            fits.ImageHDU(unc.copy(), utype, name="UNCERT"),
        ]
    )
    expected.writeto(tmp_path / "astropy.fits", checksum=True)
    part = MasterPart("", header, data.copy(), mask, unc.copy())
    master_hdus(header, [part]).writeto(tmp_path / "ours.fits", checksum=True)
    assert (tmp_path / "ours.fits").read_bytes() == (tmp_path / "astropy.fits").read_bytes()
    with fits.open(tmp_path / "ours.fits") as hdul:
        assert np.array_equal(hdul[0].data, data) and np.array_equal(hdul["UNCERT"].data, unc)


def test_big_endian_swaps_a_native_plane_in_place_and_converts_others() -> None:
    """big_endian reuses a native float32 plane's memory; a float64 plane becomes a new >f4."""
    plane = np.arange(6, dtype=np.float32).reshape(2, 3)
    swapped = big_endian(plane)
    assert swapped.dtype == np.dtype(">f4") and np.shares_memory(swapped, plane)
    assert np.array_equal(swapped, np.arange(6).reshape(2, 3))
    wide = np.arange(6, dtype=np.float64).reshape(2, 3)
    converted = big_endian(wide)
    assert converted.dtype == np.dtype(">f4") and not np.shares_memory(converted, wide)
    assert np.array_equal(converted, wide)
