"""Calibration: the same numbers as ccdproc's recipe, and clear errors for bad sections."""

from __future__ import annotations

from pathlib import Path

import ccdproc
import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.modeling.models import Polynomial1D
from astropy.nddata import CCDData

from biaswatch.errors import FrameRejected
from biaswatch.frames.calibrate import calibrate_image, resolve_section
from biaswatch.sections import Section, SectionSource
from biaswatch.settings import CalibrateSettings

HEADER = fits.Header({"BIASSEC": "[41:48,1:40]", "TRIMSEC": "[1:40,1:40]"})


def raw_image(seed: int = 0) -> np.ndarray:
    """A 40 x 48 uint16 raw frame with an 8-column overscan and a row gradient."""
    rng = np.random.default_rng(seed)
    image = rng.normal(1000, 5, (40, 48)) + np.linspace(0, 20, 40)[:, None]
    return image.astype(np.uint16)


def reference(image: np.ndarray, model: Polynomial1D | None = None) -> np.ndarray:
    """The seed recipe's calibration done with ccdproc directly."""
    ccd = CCDData(image, unit=u.adu)
    ccd = ccdproc.subtract_overscan(
        ccd, fits_section="[41:48,1:40]", overscan_axis=1, median=True, model=model
    )
    return np.asarray(ccdproc.trim_image(ccd, fits_section="[1:40,1:40]").data)


def test_matches_ccdproc_recipe() -> None:
    """Overscan (median) and trim give ccdproc's numbers, as float32."""
    out = calibrate_image(raw_image(), HEADER, CalibrateSettings())
    assert out.dtype == np.float32
    assert out.shape == (40, 40)
    np.testing.assert_allclose(out, reference(raw_image()), atol=1e-4)


def test_polynomial_overscan_model() -> None:
    """overscan_model poly:N fits a degree-N polynomial to the overscan, as ccdproc does."""
    settings = CalibrateSettings.model_validate({"overscan_model": "poly:2"})
    out = calibrate_image(raw_image(), HEADER, settings)
    np.testing.assert_allclose(out, reference(raw_image(), Polynomial1D(2)), atol=1e-3)


def test_fixed_sections_with_spaces() -> None:
    """Literal sections with spaces work like header sections."""
    settings = CalibrateSettings.model_validate(
        {"overscan": "[ 41:48 , 1:40 ]", "trim": "[1:40, 1:40]"}
    )
    out = calibrate_image(raw_image(), fits.Header(), settings)
    np.testing.assert_allclose(out, reference(raw_image()), atol=1e-4)


def test_header_section_with_spaces() -> None:
    """A header section string with spaces is accepted."""
    header = fits.Header({"BIASSEC": "[41:48, 1:40]", "TRIMSEC": "[1:40, 1:40]"})
    assert calibrate_image(raw_image(), header, CalibrateSettings()).shape == (40, 40)


def test_no_overscan_no_trim_is_a_float_copy() -> None:
    """overscan = none and trim = none leave the pixels as they are."""
    settings = CalibrateSettings.model_validate({"overscan": "none", "trim": "none"})
    image = raw_image()
    np.testing.assert_array_equal(
        calibrate_image(image, fits.Header(), settings), image.astype(np.float32)
    )


def test_missing_keyword_names_it() -> None:
    """A header section keyword that is missing is the frame's error, naming the keyword."""
    with pytest.raises(
        FrameRejected, match="overscan = header:BIASSEC: keyword BIASSEC is missing"
    ):
        calibrate_image(raw_image(), fits.Header({"TRIMSEC": "[1:40,1:40]"}), CalibrateSettings())


def test_section_outside_the_data_names_the_keyword() -> None:
    """A header section that does not fit the image is rejected, naming keyword and size."""
    header = fits.Header({"BIASSEC": "[41:48,1:40]", "TRIMSEC": "[1:2048,1:2048]"})
    with pytest.raises(
        FrameRejected,
        match=r"trim = header:TRIMSEC: \[1:2048,1:2048\] does not fit an image of 48 x 40",
    ):
        calibrate_image(raw_image(), header, CalibrateSettings())


def test_unparseable_header_section() -> None:
    """A header section that is not a section is rejected with the keyword."""
    header = fits.Header({"BIASSEC": "right side", "TRIMSEC": "[1:40,1:40]"})
    with pytest.raises(
        FrameRejected, match="overscan = header:BIASSEC: 'right side' is not a FITS section"
    ):
        calibrate_image(raw_image(), header, CalibrateSettings())


def test_overscan_must_cover_every_row() -> None:
    """An overscan strip shorter than the image is rejected, not broadcast wrongly."""
    header = fits.Header({"BIASSEC": "[41:48,1:20]", "TRIMSEC": "[1:40,1:40]"})
    with pytest.raises(FrameRejected, match="does not cover all 40 rows"):
        calibrate_image(raw_image(), header, CalibrateSettings())


def test_fixed_section_too_large_names_the_setting() -> None:
    """A configured trim larger than the frame names the setting."""
    settings = CalibrateSettings.model_validate({"overscan": "none", "trim": "[1:2048,1:2048]"})
    with pytest.raises(FrameRejected, match=r"trim = \[1:2048,1:2048\]: .* does not fit"):
        calibrate_image(raw_image(), fits.Header(), settings)


@pytest.mark.parametrize(
    ("text", "section"),
    [("[1:10,2:20]", Section(1, 10, 2, 20)), (" [ 3 : 4 , 5 : 6 ] ", Section(3, 4, 5, 6))],
)
def test_section_parse(text: str, section: Section) -> None:
    """FITS section strings parse with or without spaces."""
    assert Section.parse(text) == section
    assert SectionSource.parse(text).section == section


def test_section_to_shape() -> None:
    """A section's shape is (rows, cols), inclusive."""
    assert Section(1, 2048, 1, 100).shape() == (100, 2048)
    assert resolve_section(SectionSource.parse("none"), fits.Header(), (10, 10), "trim") is None


def test_calibrated_file_header_drops_raw_layout(tmp_path: Path) -> None:
    """The calibrated copy drops BIASSEC/TRIMSEC/BZERO, which no longer describe it."""
    from biaswatch.frames.calibrate import calibrated_header, write_calibrated

    header = HEADER.copy()
    header["BZERO"] = 32768
    header["INSTRUME"] = "cryo"
    out = write_calibrated(
        np.zeros((4, 4), np.float32), calibrated_header(header), tmp_path / "c" / "x.fits"
    )
    written = fits.getheader(out)
    assert "BIASSEC" not in written
    assert "TRIMSEC" not in written
    assert written["INSTRUME"] == "cryo"
    assert written["BITPIX"] == -32


def ccdproc_recipe(image: np.ndarray, overscan: str, trim: str | None, axis: int) -> np.ndarray:
    """ccdproc's subtract_overscan (median) and trim_image on the float32 image."""
    ccd = CCDData(image.astype(np.float32), unit=u.adu)
    ccd = ccdproc.subtract_overscan(
        ccd, fits_section=overscan, overscan_axis=axis, median=True, model=None
    )
    if trim is not None:
        ccd = ccdproc.trim_image(ccd, fits_section=trim)
    return np.asarray(ccd.data)


@pytest.mark.parametrize(
    ("overscan", "trim", "axis"),
    [
        ("[41:48,1:40]", "[1:40,1:40]", 1),
        ("[48:41,40:1]", "[40:1,1:40]", 1),  # reversed: ccdproc reads them backwards
        ("[41:48,*]", "[3:38,5:36]", 1),
        ("[41:48,1:40]", None, 1),
        ("[1:48,33:40]", "[1:40,1:32]", 0),  # a parallel overscan: one value per column
        ("[*,40:33]", "[40:1,32:1]", 0),
    ],
)
@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32, np.float64])
def test_numpy_calibration_is_bit_identical_to_ccdproc(
    overscan: str, trim: str | None, axis: int, dtype: type[np.generic]
) -> None:
    """The numpy median overscan and trim give exactly ccdproc's float32 pixels."""
    image = raw_image(3).astype(dtype)
    image[::7, 42] += 9  # an odd overscan column: the median must ignore it as ccdproc's
    settings = CalibrateSettings.model_validate(
        {"overscan": overscan, "trim": trim or "none", "overscan_axis": axis}
    )
    out = calibrate_image(image, fits.Header(), settings)
    expected = ccdproc_recipe(image, overscan, trim, axis)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected.astype(np.float32))
    assert expected.dtype == np.float32
