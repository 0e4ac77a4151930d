"""Sections: what ccdproc's parser accepts is accepted, and selects the same pixels.

Issue 13, part 7: ``[2049:2080,*]`` (valid in IRAF and ccdproc) was refused. A
section biaswatch cannot honour (a step) is a config error naming the key, or the
frame's own error when a header gives it.
"""

from __future__ import annotations

from pathlib import Path

import ccdproc
import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from ccdproc.utils.slices import slice_from_string

from biaswatch.config import load_config
from biaswatch.errors import ConfigError, FrameRejected
from biaswatch.frames.calibrate import calibrate_image
from biaswatch.sections import Section
from biaswatch.settings import CalibrateSettings
from biaswatch.testing.camera import geometry_for

ROWS, COLS = 40, 48

ACCEPTED = [
    "[1:40,1:40]",
    "[41:48,*]",
    "[ 41 : 48 , * ]",
    "[*,1:10]",
    "[*,*]",
    "[48:41,*]",
    "[40:1,40:1]",
    "[-*,1:3]",
    "[1:3,-*]",
    "[:10,5:]",
    "[5:5,2:2]",
    "[48:1,1:1]",
]


def raw_file(path: Path) -> np.ndarray:
    """A 40 x 48 uint16 raw frame on disk, read back: every pixel a different value."""
    rng = np.random.default_rng(1)
    data = rng.normal(1000, 5, (ROWS, COLS)) + np.arange(ROWS * COLS).reshape(ROWS, COLS) % 97
    fits.PrimaryHDU(data.astype(np.uint16)).writeto(path)
    return np.asarray(fits.getdata(path))


@pytest.mark.parametrize("text", ACCEPTED)
def test_sections_select_ccdprocs_pixels(tmp_path: Path, text: str) -> None:
    """Every form ccdproc parses selects, here, exactly the pixels ccdproc's slices select."""
    image = raw_file(tmp_path / "raw.fits")
    section = Section.parse(text)
    ours = image[section.slices(image.shape)]
    theirs = image[slice_from_string(text, fits_convention=True)]
    np.testing.assert_array_equal(ours, theirs)
    assert section.problem_with(image.shape) is None
    assert section.within(image.shape).shape() == theirs.shape


@pytest.mark.parametrize("text", ACCEPTED)
def test_fits_string_round_trips_through_ccdproc(tmp_path: Path, text: str) -> None:
    """The text handed to ccdproc (fits_string) selects the same pixels as the section read."""
    image = raw_file(tmp_path / "raw.fits")
    section = Section.parse(text)
    assert Section.parse(section.fits_string()) == section
    again = image[slice_from_string(section.fits_string(), fits_convention=True)]
    np.testing.assert_array_equal(again, image[slice_from_string(text, fits_convention=True)])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1:48:2,*]", "has a step"),
        ("[5,*]", "one index, which ccdproc reads as 1:5"),
        ("[0:10,1:5]", "FITS sections start at 1"),
        ("[1:10]", "is not a FITS section"),
        ("[a:b,1:5]", "not a range of whole numbers"),
    ],
)
def test_sections_biaswatch_cannot_honour_are_refused(text: str, problem: str) -> None:
    """A step, a lone index, a zero, one axis or letters: ValueError saying which."""
    with pytest.raises(ValueError, match=problem):
        Section.parse(text)


def test_whole_axis_has_no_size_until_an_image_gives_it() -> None:
    """A '*' section's shape needs the image: asking without one is an error, not a guess."""
    with pytest.raises(ValueError, match="no size until an image"):
        Section.parse("[41:48,*]").shape()


def test_whole_axis_overscan_calibrates_as_ccdproc(tmp_path: Path) -> None:
    """overscan = '[41:48,*]', trim = '[1:40,*]' give ccdproc's recipe on those same strings."""
    image = raw_file(tmp_path / "raw.fits")
    settings = CalibrateSettings.model_validate({"overscan": "[41:48,*]", "trim": "[1:40,*]"})
    out = calibrate_image(image, fits.Header(), settings)
    ccd = ccdproc.subtract_overscan(
        CCDData(image.astype(np.float32), unit=u.adu),
        fits_section="[41:48,*]",
        overscan_axis=1,
        median=True,
    )
    expected = ccdproc.trim_image(ccd, fits_section="[1:40,*]").data
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_reversed_header_trim_flips_as_ccdproc(tmp_path: Path) -> None:
    """A header TRIMSEC '[40:1,*]' flips the columns, as ccdproc.trim_image does."""
    image = raw_file(tmp_path / "raw.fits")
    header = fits.Header({"BIASSEC": "[41:48,*]", "TRIMSEC": "[40:1,*]"})
    out = calibrate_image(image, header, CalibrateSettings())
    ccd = ccdproc.subtract_overscan(
        CCDData(image.astype(np.float32), unit=u.adu),
        fits_section="[41:48,*]",
        overscan_axis=1,
        median=True,
    )
    np.testing.assert_allclose(out, ccdproc.trim_image(ccd, "[40:1,*]").data, atol=1e-4)


def test_header_section_with_a_step_is_the_frames_error(tmp_path: Path) -> None:
    """A BIASSEC with a step rejects that frame, naming the setting and why."""
    image = raw_file(tmp_path / "raw.fits")
    header = fits.Header({"BIASSEC": "[41:48:2,*]", "TRIMSEC": "[1:40,*]"})
    with pytest.raises(FrameRejected, match=r"overscan = header:BIASSEC: .* has a step"):
        calibrate_image(image, header, CalibrateSettings())


def test_configured_section_with_a_step_is_a_config_error(tmp_path: Path) -> None:
    """A configured trim with a step is a config error naming the camera's key."""
    (tmp_path / "raw").mkdir()
    path = tmp_path / "config.toml"
    path.write_text(
        '[cameras.c]\nwatch = ["raw"]\n[cameras.c.calibrate]\ntrim = "[1:40:2,*]"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(
        p.endswith(
            "[cameras.c.calibrate] trim: '[1:40:2,*]' has a step ('1:40:2'): biaswatch "
            "cannot honour it (got '[1:40:2,*]')"
        )
        for p in caught.value.problems
    ), caught.value.problems


def test_simulated_camera_fills_a_whole_axis_from_the_other_section(tmp_path: Path) -> None:
    """simulate's geometry for overscan '[41:48,*]' and trim '[1:40,1:40]' is 40 x 48."""
    (tmp_path / "raw").mkdir()
    path = tmp_path / "config.toml"
    path.write_text(
        '[cameras.c]\nwatch = ["raw"]\n[cameras.c.calibrate]\n'
        'overscan = "[41:48,*]"\ntrim = "[1:40,1:40]"\n',
        encoding="utf-8",
    )
    geometry = geometry_for(load_config(path).camera("c"))
    assert (geometry.rows, geometry.cols) == (40, 48)
    assert geometry.biassec == Section(41, 48, 1, 40)
