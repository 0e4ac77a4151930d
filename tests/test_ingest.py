"""Ingest: every frame layout a camera writes becomes the same calibrated frame as ccdproc's."""

from __future__ import annotations

from pathlib import Path

import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from biaswatch.config import CameraConfig, SiteConfig
from biaswatch.ingest import ingest
from biaswatch.testing import make_bias_fits


@pytest.mark.parametrize(
    ("layout", "dtype", "name"),
    [
        ("primary", "uint16", "a.fits"),
        ("primary", "uint32", "a.fit"),
        ("primary", "float32", "a.fts"),
        ("extension", "uint16", "a.fits"),
        ("compressed", "uint16", "a.fits.fz"),
    ],
)
def test_every_layout_calibrates_like_ccdproc(
    tmp_path: Path, layout: str, dtype: str, name: str
) -> None:
    """Primary, extension and tile-compressed images of any dtype calibrate as ccdproc does."""
    raw = make_bias_fits(tmp_path / name, layout=layout, dtype=dtype)  # type: ignore[arg-type]
    camera = CameraConfig(name="cryo", watch=(tmp_path,))
    record = ingest(raw, camera, SiteConfig(), tmp_path / "work")
    assert (record.status, record.night, record.geometry) == ("valid", "2026-11-24", "48x40-1x1")
    hdu = 1 if layout in ("extension", "compressed") else 0
    ccd = CCDData.read(raw, hdu=hdu, unit="adu")
    ccd = ccdproc.subtract_overscan(ccd, fits_section=ccd.header["BIASSEC"], median=True)
    expected = ccdproc.trim_image(ccd, fits_section=ccd.header["TRIMSEC"]).data
    assert record.calibrated is not None
    np.testing.assert_allclose(fits.getdata(record.calibrated), expected, atol=1e-3)


def test_ignored_frame_is_not_calibrated(tmp_path: Path) -> None:
    """A non-bias frame is recorded as ignored and nothing is written to the work area."""
    raw = make_bias_fits(tmp_path / "flat.fits", imagetyp="Flat Field")
    record = ingest(raw, CameraConfig(name="c", watch=(tmp_path,)), SiteConfig(), tmp_path / "work")
    assert (record.status, record.reason) == ("ignored", "IMAGETYP = 'Flat Field' is not a bias")
    assert not (tmp_path / "work").exists()


def test_same_name_in_two_directories_gets_two_work_files(tmp_path: Path) -> None:
    """Two watched directories may hold the same file name; their calibrated copies stay apart."""
    camera = CameraConfig(name="c", watch=(tmp_path / "a", tmp_path / "b"))
    paths = []
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        paths.append(make_bias_fits(tmp_path / sub / "bias.fits"))
    records = [ingest(p, camera, SiteConfig(), tmp_path / "work") for p in paths]
    assert records[0].calibrated != records[1].calibrated
