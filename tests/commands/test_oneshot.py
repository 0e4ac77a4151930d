"""`biaswatch combine`: the service's path once, from raw or calibrated frames to a master."""

from __future__ import annotations

import subprocess
from pathlib import Path

import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from biaswatch.settings import CombineSettings
from biaswatch.testing.fits import make_bias_fits, seed_combine
from biaswatch.testing.helpers import run_cli


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run `biaswatch combine` with these arguments."""
    return run_cli("combine", *args, timeout=300)


@pytest.fixture(name="raws")
def _raws(tmp_path: Path) -> list[Path]:
    paths = []
    for i in range(6):
        path = make_bias_fits(tmp_path / f"raw{i}.fits", seed=i)
        with fits.open(path, mode="update") as hdul:  # a cosmic ray, for the clipping
            hdul[0].data[5 + i, 7 + i] = 4000 + 100 * i
        paths.append(path)
    return paths


def calibrated_reference(raws: list[Path]) -> list[CCDData]:
    """The seed recipe's calibration, done with ccdproc."""
    out = []
    for raw in raws:
        ccd = CCDData.read(raw, unit="adu")
        ccd = ccdproc.subtract_overscan(ccd, fits_section=ccd.header["BIASSEC"], median=True)
        out.append(ccdproc.trim_image(ccd, fits_section=ccd.header["TRIMSEC"]))
    return out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy ma in ccdproc's reference
def test_raw_frames_give_the_seed_recipes_master(tmp_path: Path, raws: list[Path]) -> None:
    """Raw frames are calibrated and combined like the seed recipe, with a master's header."""
    out = tmp_path / "master.fits"
    result = run("-o", out, *raws)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("combined 6 frames")
    assert "frame.calibrated" not in result.stdout + result.stderr  # info stays quiet
    reference = seed_combine(calibrated_reference(raws))
    with fits.open(out, checksum=True) as hdul:
        header, data = hdul[0].header, hdul[0].data
        assert np.max(np.abs(data - reference)) <= 1e-3
    assert (header["COMBINED"], header["NCOMBINE"], header["BWMETHOD"]) == (True, 6, "average")
    assert [header[f"IMCMB00{i}"] for i in range(1, 7)] == [p.name for p in raws]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy ma in ccdproc's reference
def test_calibrated_median_with_sigma(tmp_path: Path, raws: list[Path]) -> None:
    """--calibrated skips calibration; --method and --sigma set the statistics."""
    calibrated = []
    for i, ccd in enumerate(calibrated_reference(raws)):
        path = tmp_path / f"cal{i}.fits"
        fits.PrimaryHDU(np.asarray(ccd.data, np.float32)).writeto(path)
        calibrated.append(path)
    out = tmp_path / "m.fits"
    result = run(
        "--calibrated",
        "--method",
        "median",
        "--sigma",
        "3",
        "3",
        "--mem-limit",
        "20MB",
        "-o",
        out,
        *calibrated,
    )
    assert result.returncode == 0, result.stderr
    settings = CombineSettings(method="median", sigma_low=3.0, sigma_high=3.0)
    reference = seed_combine([str(p) for p in calibrated], settings=settings)
    assert np.max(np.abs(fits.getdata(out) - reference)) <= 1e-3
    header = fits.getheader(out)
    assert (header["BWMETHOD"], header["BWSLOW"], header["BWSHIGH"]) == ("median", 3.0, 3.0)
    assert header["BWMEMLIM"] == 20_000_000


def test_existing_output_is_never_overwritten(tmp_path: Path, raws: list[Path]) -> None:
    """An existing output is refused and left as it was."""
    out = tmp_path / "m.fits"
    out.write_bytes(b"precious")
    result = run("-o", out, *raws)
    assert result.returncode == 1
    assert "never overwrites" in result.stderr
    assert out.read_bytes() == b"precious"


def test_unusable_frame_is_an_error_with_its_reason(tmp_path: Path, raws: list[Path]) -> None:
    """A frame that is not a bias fails the command, naming the file and the reason."""
    flat = make_bias_fits(tmp_path / "flat.fits", imagetyp="FLAT")
    result = run("-o", tmp_path / "m.fits", *raws, flat)
    assert result.returncode == 1
    assert "flat.fits: IMAGETYP = 'FLAT' is not a bias" in result.stderr
    assert not (tmp_path / "m.fits").exists()


def test_too_small_mem_limit_names_the_minimum(tmp_path: Path, raws: list[Path]) -> None:
    """A memory limit below one row of the stack is refused with the minimum."""
    result = run("--mem-limit", "1000", "-o", tmp_path / "m.fits", *raws)
    assert result.returncode == 1
    assert "is too small" in result.stderr
    assert "it needs at least" in result.stderr


def test_camera_settings_from_config(tmp_path: Path, raws: list[Path]) -> None:
    """--config with --camera uses that camera's calibration settings."""
    config = tmp_path / "c.toml"
    config.write_text('[cameras.x]\nwatch = ["in"]\n[cameras.x.calibrate]\ntrim = "[1:10,1:10]"\n')
    out = tmp_path / "m.fits"
    result = run("--config", config, "--camera", "x", "-o", out, *raws)
    assert result.returncode == 0, result.stderr
    assert fits.getdata(out).shape == (10, 10)
    assert fits.getheader(out)["BWCAMERA"] == "x"


def test_bad_sigma_is_refused(tmp_path: Path, raws: list[Path]) -> None:
    """A negative sigma is a validation error, not a silent master."""
    result = run("--sigma", "-1", "5", "-o", tmp_path / "m.fits", *raws)
    assert result.returncode == 1
    assert "sigma_low" in result.stderr
