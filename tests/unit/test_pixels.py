"""The plain unsigned 16-bit read: astropy's pixels and header, taken from the bytes in place."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from biaswatch.config import CameraConfig
from biaswatch.frames import readiness
from biaswatch.frames.opening import read_bytes
from biaswatch.frames.pixels import plain_unsigned
from biaswatch.testing.fits import make_bias_fits
from biaswatch.testing.helpers import cryo_camera


@pytest.fixture(name="camera")
def _camera(tmp_path: Path) -> CameraConfig:
    return cryo_camera(tmp_path)


def _both_ways(path: Path, camera: CameraConfig, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """The frame parsed with the plain read, then with astropy's read alone."""
    raw = read_bytes(path, camera)
    fast = readiness.parse_frame(raw, camera)
    with monkeypatch.context() as patch:
        patch.setattr(readiness, "_plain_images", lambda *_args: None)
        slow = readiness.parse_frame(raw, camera)
    return fast, slow


@pytest.mark.parametrize(
    ("dtype", "layout", "plain"),
    [
        ("uint16", "primary", True),
        ("int16", "primary", False),
        ("float32", "primary", False),
        ("uint16", "extension", False),
    ],
)
def test_plain_read_gives_astropys_frame(
    tmp_path: Path,
    camera: CameraConfig,
    monkeypatch: pytest.MonkeyPatch,
    dtype: str,
    layout: str,
    plain: bool,
) -> None:
    """Pixels, dtype, header cards and hash equal astropy's; only uint16 primaries go plain."""
    path = make_bias_fits(tmp_path / "a.fits", dtype=dtype, layout=layout, seed=4)  # type: ignore[arg-type]
    fast, slow = _both_ways(path, camera, monkeypatch)
    assert fast.image.dtype == slow.image.dtype
    np.testing.assert_array_equal(fast.image, slow.image)
    assert [c.image for c in fast.header.cards] == [c.image for c in slow.header.cards]
    assert fast.sha256 == slow.sha256
    with fits.open(io.BytesIO(path.read_bytes())) as hdul:
        assert (plain_unsigned(hdul, path.read_bytes()) is not None) is plain


def test_extreme_values_survive_the_sign_flip(tmp_path: Path) -> None:
    """0, 32767, 32768 and 65535 read back as written (BZERO = 32768 done as a bit flip)."""
    data = np.array([[0, 1, 32767, 32768], [32769, 65534, 65535, 1000]], dtype=np.uint16)
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits")
    content = (tmp_path / "a.fits").read_bytes()
    with fits.open(io.BytesIO(content)) as hdul:
        got = plain_unsigned(hdul, content)
    assert got is not None and got.dtype == np.uint16
    np.testing.assert_array_equal(got, data)


def test_blank_or_cut_data_is_left_to_astropy(tmp_path: Path) -> None:
    """A BLANK card, or data shorter than the header says, is not read plain."""
    data = np.arange(12, dtype=np.uint16).reshape(3, 4)
    hdu = fits.PrimaryHDU(data)
    hdu.header["BLANK"] = 0
    hdu.writeto(tmp_path / "blank.fits")
    fits.PrimaryHDU(data).writeto(tmp_path / "cut.fits")
    content = (tmp_path / "blank.fits").read_bytes()
    with fits.open(io.BytesIO(content)) as hdul:
        assert plain_unsigned(hdul, content) is None
    cut = (tmp_path / "cut.fits").read_bytes()[: 2880 + 10]
    with fits.open(io.BytesIO(cut)) as hdul:
        assert plain_unsigned(hdul, cut) is None
