"""biaswatch.testing: the files it writes are real FITS, read back with astropy."""

from __future__ import annotations

import ast
import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from hypothesis import given, settings
from hypothesis import strategies as st

import biaswatch.testing
from biaswatch.sections import Section
from biaswatch.testing import camera as simulate
from biaswatch.testing import fits as testing
from biaswatch.testing.fits import (
    FakeClock,
    FakeNotifier,
    fits_bytes,
    make_bias_fits,
    truncated_copy,
)


def _open(payload: bytes, **options: Any) -> fits.HDUList:
    return fits.open(io.BytesIO(payload), **options)


def _expected_pixels(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).normal(1000.0, 5.0, shape)
    return np.rint(values)


def test_uint16_round_trips_through_bzero(tmp_path: Path) -> None:
    """uint16 pixels are stored as int16 with BZERO=32768 and read back unchanged."""
    path = make_bias_fits(tmp_path / "b.fits")
    with fits.open(path) as hdul:
        header, data = hdul[0].header, hdul[0].data
        assert (header["BITPIX"], header["BZERO"], header["BSCALE"]) == (16, 32768, 1)
        assert data.dtype == np.uint16
        np.testing.assert_array_equal(data, _expected_pixels((40, 48)))
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        stored = hdul[0].data
        assert stored.dtype.kind == "i" and stored.dtype.itemsize == 2
        np.testing.assert_array_equal(stored.astype(np.int32) + 32768, _expected_pixels((40, 48)))


@pytest.mark.parametrize(
    ("dtype", "bitpix", "bzero", "kind"),
    [("uint32", 32, 2**31, "u"), ("int16", 16, None, "i"), ("float32", -32, None, "f")],
)
def test_other_dtypes_are_stored_as_cameras_store_them(
    dtype: testing.DType, bitpix: int, bzero: int | None, kind: str
) -> None:
    """uint32 gets BZERO=2**31, int16 and float32 are stored plainly, values intact."""
    with _open(fits_bytes(dtype=dtype)) as hdul:
        header, data = hdul[0].header, hdul[0].data
        assert header["BITPIX"] == bitpix
        assert header.get("BZERO") == bzero
        assert data.dtype.kind == kind
        expected = np.random.default_rng(0).normal(1000.0, 5.0, (40, 48))
        if kind != "f":
            expected = np.rint(expected)
        np.testing.assert_allclose(data, expected, rtol=1e-6)


def test_extension_layout_has_an_empty_primary_and_a_sci_image() -> None:
    """layout='extension' puts image and keywords in ImageHDU 'SCI' after an empty primary."""
    with _open(fits_bytes(layout="extension")) as hdul:
        assert len(hdul) == 2
        assert hdul[0].data is None
        assert isinstance(hdul[1], fits.ImageHDU) and hdul[1].name == "SCI"
        assert hdul["SCI"].data.shape == (40, 48)
        assert hdul["SCI"].data.dtype == np.uint16
        assert hdul["SCI"].header["IMAGETYP"] == "BIAS"
        assert "IMAGETYP" not in hdul[0].header


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "int16", "float32"])
def test_compressed_layout_is_lossless_tile_compression(
    tmp_path: Path, dtype: testing.DType
) -> None:
    """layout='compressed' writes a CompImageHDU in HDU 1 whose pixels equal the plain file's."""
    path = make_bias_fits(tmp_path / "b.fits.fz", layout="compressed", dtype=dtype)
    with fits.open(path) as hdul, _open(fits_bytes(dtype=dtype)) as plain:
        assert hdul[0].data is None
        assert isinstance(hdul[1], fits.CompImageHDU)
        assert hdul[1].header["IMAGETYP"] == "BIAS"
        assert hdul[1].data.dtype.newbyteorder("=") == plain[0].data.dtype.newbyteorder("=")
        np.testing.assert_array_equal(hdul[1].data, plain[0].data)


def test_header_entries_override_add_and_delete_keywords() -> None:
    """header= replaces values, adds keywords (with comments) and deletes those mapped to None."""
    extra = {"IMAGETYP": "Zero", "OBSERVER": ("night bot", "who"), "EXPTIME": None}
    with _open(fits_bytes(header=extra)) as hdul:
        header = hdul[0].header
        assert header["IMAGETYP"] == "Zero"
        assert header["OBSERVER"] == "night bot"
        assert header.comments["OBSERVER"] == "who"
        assert "EXPTIME" not in header


def test_imagetyp_and_date_obs_none_leave_the_keywords_out() -> None:
    """imagetyp=None and date_obs=None write neither IMAGETYP nor DATE-OBS."""
    with _open(fits_bytes(imagetyp=None, date_obs=None)) as hdul:
        assert "IMAGETYP" not in hdul[0].header
        assert "DATE-OBS" not in hdul[0].header
    with _open(fits_bytes(date_obs="2026-11-25T03:04:05.678")) as hdul:
        assert hdul[0].header["DATE-OBS"] == "2026-11-25T03:04:05.678"


def test_sections_fit_the_data_and_ccdproc_accepts_them() -> None:
    """BIASSEC/TRIMSEC split the raw frame into overscan and image, and ccdproc calibrates it."""
    with _open(fits_bytes(shape=(40, 48), overscan_cols=8)) as hdul:
        header, data = hdul[0].header, hdul[0].data
    biassec, trimsec = Section.parse(header["BIASSEC"]), Section.parse(header["TRIMSEC"])
    assert (biassec, trimsec) == (Section(41, 48, 1, 40), Section(1, 40, 1, 40))
    ccd = CCDData(data.astype(np.float32), unit="adu")
    calibrated = ccdproc.trim_image(
        ccdproc.subtract_overscan(ccd, fits_section=header["BIASSEC"], median=True),
        fits_section=header["TRIMSEC"],
    )
    assert calibrated.shape == (40, 40)
    assert abs(float(np.median(calibrated.data))) < 2.0


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(2, 12),
    overscan=st.integers(0, 11),
)
def test_sections_fit_any_shape(rows: int, cols: int, overscan: int) -> None:
    """For any shape and overscan width the sections lie inside the data and cover it."""
    overscan = min(overscan, cols - 1)
    with _open(fits_bytes(shape=(rows, cols), overscan_cols=overscan)) as hdul:
        header, data = hdul[0].header, hdul[0].data
    assert data.shape == (rows, cols)
    trimsec = Section.parse(header["TRIMSEC"])
    assert trimsec.problem_with(data.shape) is None
    assert trimsec.shape() == (rows, cols - overscan)
    if overscan == 0:
        assert "BIASSEC" not in header
    else:
        biassec = Section.parse(header["BIASSEC"])
        assert biassec.problem_with(data.shape) is None
        assert biassec.shape() == (rows, overscan)
        assert biassec.x1 == trimsec.x2 + 1


def test_bad_shapes_are_refused() -> None:
    """An overscan as wide as the frame, or an empty shape, is a ValueError."""
    with pytest.raises(ValueError, match="overscan_cols"):
        fits_bytes(shape=(10, 8), overscan_cols=8)
    with pytest.raises(ValueError, match="overscan_cols"):
        fits_bytes(shape=(0, 8), overscan_cols=2)


def test_binning_writes_x_and_y_binning() -> None:
    """binning=(x, y) writes XBINNING/YBINNING; without it neither keyword is written."""
    with _open(fits_bytes(binning=(2, 3))) as hdul:
        assert (hdul[0].header["XBINNING"], hdul[0].header["YBINNING"]) == (2, 3)
    with _open(fits_bytes()) as hdul:
        assert "XBINNING" not in hdul[0].header and "YBINNING" not in hdul[0].header


def test_same_arguments_give_the_same_bytes_except_date() -> None:
    """Repeated calls agree byte for byte once DATE is removed; another seed changes the pixels."""
    repeatable = {"DATE": None}
    assert fits_bytes(header=repeatable) == fits_bytes(header=repeatable)
    assert fits_bytes(header=repeatable, seed=1) != fits_bytes(header=repeatable)
    with _open(fits_bytes()) as hdul:
        written = datetime.fromisoformat(hdul[0].header["DATE"]).replace(tzinfo=UTC)
    assert abs(written - datetime.now(UTC)) < timedelta(minutes=1)


def test_make_bias_fits_writes_what_fits_bytes_returns(tmp_path: Path) -> None:
    """make_bias_fits returns its path and the file holds exactly fits_bytes' content."""
    options: dict[str, Any] = {"layout": "extension", "seed": 7, "header": {"DATE": None}}
    path = make_bias_fits(tmp_path / "b.fits", **options)
    assert path == tmp_path / "b.fits"
    assert path.read_bytes() == fits_bytes(**options)


def test_truncated_copy_keeps_only_the_first_bytes(tmp_path: Path) -> None:
    """truncated_copy writes the first keep_bytes bytes of src and refuses impossible lengths."""
    src = make_bias_fits(tmp_path / "full.fits")
    dst = truncated_copy(src, tmp_path / "cut.fits", 4000)
    assert dst == tmp_path / "cut.fits"
    assert dst.read_bytes() == src.read_bytes()[:4000]
    with pytest.raises(ValueError, match="keep_bytes"):
        truncated_copy(src, tmp_path / "long.fits", src.stat().st_size + 1)


def test_write_in_pieces_is_the_simulator_s() -> None:
    """testing.write_in_pieces is simulate.write_in_pieces re-exported."""
    assert testing.write_in_pieces is simulate.write_in_pieces


def test_fake_clock_starts_at_the_given_time_and_advances_both_clocks() -> None:
    """advance() moves now() and monotonic() by the same amount; now() is aware UTC."""
    clock = FakeClock()
    assert clock.now() == datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    assert clock.now().utcoffset() == timedelta(0)
    before = clock.monotonic()
    clock.advance(90.5)
    assert clock.now() == datetime(2026, 11, 25, 2, 1, 30, 500000, tzinfo=UTC)
    assert clock.monotonic() == pytest.approx(before + 90.5)


def test_fake_clock_converts_its_start_to_utc_and_refuses_bad_input() -> None:
    """A start in another zone is shown in UTC; a naive start or going back is a ValueError."""
    start = datetime(2026, 11, 24, 20, 0, tzinfo=timezone(timedelta(hours=-6)))
    clock = FakeClock(start)
    assert clock.now() == start and clock.now().tzinfo == UTC
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="aware"):
        FakeClock(datetime(2026, 11, 25, 2, 0))


def test_fake_notifier_records_messages_in_order() -> None:
    """notify() appends each message to .messages instead of sending it."""
    notifier = FakeNotifier()
    assert notifier.messages == []
    notifier.notify("READY=1")
    notifier.notify("STATUS=watching 2 cameras")
    assert notifier.messages == ["READY=1", "STATUS=watching 2 cameras"]


TEST_ONLY = {"pytest", "mfusepy", "selenium", "hypothesis"}


def test_the_shipped_testing_package_imports_no_test_only_package() -> None:
    """No module of biaswatch.testing (shipped in the wheel) imports pytest, mfusepy or selenium."""
    package = Path(biaswatch.testing.__file__).parent
    found: set[tuple[str, str]] = set()
    for module in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found.update({(module.name, n) for n in names if n.split(".")[0] in TEST_ONLY})
    assert found == set(), found
