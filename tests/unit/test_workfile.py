"""The work file writer: astropy's exact bytes, written without astropy's writeto."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from biaswatch.combine.engine import combine_files
from biaswatch.errors import CombineFailed
from biaswatch.fitsbytes import fits_status
from biaswatch.frames import workfile
from biaswatch.frames.workfile import write_images
from biaswatch.settings import CombineSettings


def _image(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A float32 image of noise around zero, as a calibrated bias."""
    return np.random.default_rng(seed).normal(0, 5, (rows, cols)).astype(np.float32)


def _header() -> fits.Header:
    """A calibrated header with a few ordinary cards."""
    return fits.Header([("OBSERVER", "night crew"), ("EXPTIME", 0.0), ("BWNAMP", 2)])


def _hdus() -> list[list[fits.PrimaryHDU | fits.ImageHDU]]:
    """One image alone, and a dataless primary with two named extensions."""
    return [
        [fits.PrimaryHDU(data=_image(37, 53), header=_header())],
        [
            fits.PrimaryHDU(header=_header()),
            fits.ImageHDU(data=_image(40, 48, 1), header=_header(), name="A"),
            fits.ImageHDU(data=_image(5, 48, 2), header=_header(), name="B"),
        ],
    ]


@pytest.mark.parametrize("layout", [0, 1])
def test_work_file_bytes_equal_astropys_writeto(
    tmp_path: Path, layout: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer gives byte for byte the file HDUList.writeto gives, across band boundaries."""
    monkeypatch.setattr(workfile, "BAND_BYTES", 4 * 100)  # many bands, one cut mid-row
    fits.HDUList(_hdus()[layout]).writeto(tmp_path / "astropy.fits")
    write_images(tmp_path / "ours.fits", _hdus()[layout])
    assert (tmp_path / "ours.fits").read_bytes() == (tmp_path / "astropy.fits").read_bytes()
    assert fits_status(tmp_path / "ours.fits").state == "complete"


def test_work_file_appears_only_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails midway leaves no file under the final name, and no temporary one."""
    calls = 0

    def failing(fd: int, data: object) -> int:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise OSError(28, "No space left on device")
        return len(memoryview(data))  # type: ignore[arg-type]

    monkeypatch.setattr(workfile.os, "write", failing)
    with pytest.raises(OSError, match="No space"):
        write_images(tmp_path / "w.fits", _hdus()[0])
    assert list(tmp_path.iterdir()) == []


def test_unwritable_card_is_refused_as_writeto_refuses_it(tmp_path: Path) -> None:
    """A header card astropy would refuse to write makes the writer raise, not write junk."""
    header = _header()
    header.append(fits.Card.fromstring("BAD     = 'unclosed"))
    with pytest.raises(fits.VerifyError):
        write_images(tmp_path / "w.fits", [fits.PrimaryHDU(data=_image(4, 4), header=header)])


@pytest.mark.parametrize("kept", [0, 2880, 2880 + 37 * 53 * 2])
def test_a_work_file_cut_by_a_crash_fails_its_combine_naming_it(tmp_path: Path, kept: int) -> None:
    """A work file left short (no fsync, then a power cut) fails the combine, never adds zeros.

    Empty, header only, or half its pixels: what delayed allocation can leave under the
    final name after a crash. The combine refuses it with its path in the reason.
    """
    paths = [
        write_images(tmp_path / f"w{i}.fits", [fits.PrimaryHDU(data=_image(37, 53, i))])
        for i in range(3)
    ]
    cut = paths[1]
    cut.write_bytes(cut.read_bytes()[:kept])
    with pytest.raises(CombineFailed) as failure:
        combine_files(paths, CombineSettings(), 10**9)
    assert str(cut) in failure.value.reason
