"""Ingest: every frame layout a camera writes becomes the same calibrated frame as ccdproc's."""

from __future__ import annotations

from pathlib import Path

import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from biaswatch.config import CameraConfig, SiteConfig
from biaswatch.frames.read import ingest
from biaswatch.testing.fits import make_bias_fits, truncated_copy


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


def test_nan_filled_frame_is_rejected_with_the_count(tmp_path: Path) -> None:
    """A float raw bias holding NaN is rejected, saying how many pixels are bad."""
    raw = make_bias_fits(tmp_path / "raw.fits", dtype="float32")
    with fits.open(raw, mode="update") as hdul:
        hdul[0].data[:2, :] = np.nan
    record = ingest(raw, CameraConfig(name="c", watch=(tmp_path,)), SiteConfig(), tmp_path / "w")
    assert (record.status, record.reason) == ("rejected", "96 of 1920 pixels are NaN or infinite")
    assert not (tmp_path / "w").exists()


def test_header_bitpix_that_does_not_match_the_data_is_rejected(tmp_path: Path) -> None:
    """A header claiming 32-bit pixels over 16-bit data is refused as incomplete, not read."""
    raw = make_bias_fits(tmp_path / "raw.fits")
    data = bytearray(raw.read_bytes())
    card = data.find(b"BITPIX  =")
    data[card : card + 30] = b"BITPIX  =                   32"
    raw.write_bytes(bytes(data))
    record = ingest(raw, CameraConfig(name="c", watch=(tmp_path,)), SiteConfig(), tmp_path / "w")
    assert record.status == "rejected"
    assert "truncated" in str(record.reason)


def test_hostile_header_strings_never_name_an_output(tmp_path: Path) -> None:
    """Path-like header values do not reach the night label or the calibrated file's name."""
    raw = make_bias_fits(
        tmp_path / "raw.fits",
        date_obs="../../../etc/passwd",
        header={"OBJECT": "../../escape", "FILENAME": "/etc/shadow"},
    )
    record = ingest(raw, CameraConfig(name="c", watch=(tmp_path,)), SiteConfig(), tmp_path / "w")
    assert record.status == "valid"
    assert str(record.night).count("-") == 2 and str(record.night)[:2] == "20"  # from mtime
    calibrated = Path(str(record.calibrated))
    assert calibrated.resolve().is_relative_to((tmp_path / "w").resolve())
    assert calibrated.parent.name == record.night


def test_frame_cut_in_its_last_padding_is_read_and_one_cut_in_its_data_is_not(
    tmp_path: Path,
) -> None:
    """Missing padding after the last data byte is harmless; missing data is truncation.

    Found by benchmarks/soak.py: such a file passed the completeness walk, then
    astropy's "may have been truncated" warning rejected it as corrupt.
    """
    whole = make_bias_fits(tmp_path / "whole.fits")
    payload = whole.read_bytes()
    data_end = len(payload) - 2880 + (40 * 48 * 2) % 2880  # header block + 3840 data bytes
    camera = CameraConfig(name="c", watch=(tmp_path,))
    unpadded = truncated_copy(whole, tmp_path / "unpadded.fits", data_end + 10)
    record = ingest(unpadded, camera, SiteConfig(), tmp_path / "w")
    assert record.status == "valid", record.reason
    with (
        fits.open(record.calibrated) as ours,
        fits.open(ingest(whole, camera, SiteConfig(), tmp_path / "w2").calibrated) as reference,
    ):
        np.testing.assert_array_equal(ours[0].data, reference[0].data)
    short = truncated_copy(whole, tmp_path / "short.fits", data_end - 10)
    assert ingest(short, camera, SiteConfig(), tmp_path / "w3").status == "rejected"
