"""biaswatch.simulate: raw bias frames as a camera writes them, checked by reading them back."""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import mad_std

from biaswatch.config import CameraConfig
from biaswatch.sections import Section
from biaswatch.testing.camera import (
    Geometry,
    camera_header,
    frame_bytes,
    geometry_for,
    make_raw_bias,
    make_structure,
    section_slices,
    simulate,
    write_in_pieces,
)
from biaswatch.testing.fits import FakeClock
from biaswatch.testing.helpers import cryo_camera

# 256 x 256 image + a 32-column overscan: big enough for tight noise statistics,
# small enough to generate in milliseconds.
SMALL = Geometry(
    rows=256, cols=288, biassec=Section(257, 288, 1, 256), trimsec=Section(1, 256, 1, 256)
)
NAME = re.compile(r"^cryo_\d{8}T\d{6}_\d{3}_bias\.fits$")


def _read(path: Path, hdu: int | str = 0) -> tuple[fits.Header, np.ndarray]:
    with fits.open(path) as hdul:
        return hdul[hdu].header.copy(), hdul[hdu].data.copy()


def _calibrate(header: fits.Header, data: np.ndarray) -> np.ndarray:
    """Overscan-subtract (median per row) and trim with ccdproc, as the service does."""
    ccd = CCDData(data.astype(np.float32), unit="adu")
    ccd = ccdproc.subtract_overscan(ccd, fits_section=header["BIASSEC"], median=True)
    return np.asarray(ccdproc.trim_image(ccd, fits_section=header["TRIMSEC"]).data)


def _simulate_quickly(
    camera: CameraConfig,
    out_dir: Path,
    frames: int,
    *,
    now: Callable[[], datetime] | None = None,
    on_frame: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Frames of SMALL geometry, back to back, each file written at once."""
    return simulate(
        camera,
        frames=frames,
        interval=0.0,
        seed=1,
        now=now or FakeClock().now,
        out_dir=out_dir,
        on_frame=on_frame,
        geometry=SMALL,
        piece_delay=0.0,
    )


def test_default_geometry_is_2k_image_plus_32_overscan_columns(tmp_path: Path) -> None:
    """Header sections: 2048 x 2080 raw, BIASSEC [2049:2080,1:2048], TRIMSEC [1:2048,1:2048]."""
    geometry = geometry_for(CameraConfig(name="cryo", watch=(tmp_path,)))
    assert geometry.shape == (2048, 2080)
    assert geometry.biassec == Section.parse("[2049:2080,1:2048]")
    assert geometry.trimsec == Section.parse("[1:2048,1:2048]")


def test_fixed_sections_get_the_smallest_frame_holding_them(tmp_path: Path) -> None:
    """trim [1:2048,1:2048] and overscan none give a 2048 x 2048 frame without overscan."""
    camera = cryo_camera(tmp_path, calibrate={"overscan": "none", "trim": "[1:2048,1:2048]"})
    geometry = geometry_for(camera)
    assert (geometry.shape, geometry.biassec) == ((2048, 2048), None)
    assert geometry.trimsec == Section(1, 2048, 1, 2048)


@pytest.mark.parametrize(
    ("overscan", "trim"),
    [
        ("[1:32,1:2048]", "header:TRIMSEC"),
        ("[1:2048,1:16]", "none"),
        ("header:BIASSEC", "[5:1000,3:500]"),
        ("[1001:1020,1:500]", "[1:1000,1:500]"),
    ],
)
def test_geometry_holds_fixed_sections_apart(tmp_path: Path, overscan: str, trim: str) -> None:
    """Fixed sections are kept as written, lie inside the frame, and never overlap."""
    camera = cryo_camera(tmp_path, calibrate={"overscan": overscan, "trim": trim})
    geometry = geometry_for(camera)
    assert geometry.biassec is not None
    for setting, section in ((overscan, geometry.biassec), (trim, geometry.trimsec)):
        assert section.problem_with(geometry.shape) is None
        if setting.startswith("["):
            assert section == Section.parse(setting)
    mask = np.zeros(geometry.shape, dtype=int)
    for section in (geometry.biassec, geometry.trimsec):
        mask[section_slices(section)] += 1
    assert mask.max() == 1


def test_geometry_refuses_sections_outside_the_frame() -> None:
    """A Geometry whose section does not fit its frame is a ValueError."""
    with pytest.raises(ValueError, match="does not fit"):
        Geometry(rows=10, cols=10, biassec=Section(11, 12, 1, 10), trimsec=Section(1, 10, 1, 10))


def test_raw_bias_is_uint16_at_the_level_with_the_requested_noise() -> None:
    """A frame is uint16 of the geometry's shape, near the level, with read_noise rms."""
    frame = make_raw_bias(SMALL, np.random.default_rng(3), level=1500.0, read_noise=6.0)
    assert frame.dtype == np.uint16 and frame.shape == SMALL.shape
    assert abs(float(np.median(frame)) - 1500.0) < 30.0
    assert SMALL.biassec is not None
    overscan = frame[section_slices(SMALL.biassec)].astype(float)
    rows_removed = overscan - np.median(overscan, axis=1, keepdims=True)
    assert mad_std(rows_removed) == pytest.approx(6.0, rel=0.1)


def test_raw_bias_clips_to_the_uint16_range() -> None:
    """A level near zero or above 65535 is clipped, never wrapped around."""
    low = make_raw_bias(SMALL, np.random.default_rng(0), level=0.0)
    high = make_raw_bias(SMALL, np.random.default_rng(0), level=70000.0)
    assert low.min() == 0 and np.median(low) < 50
    assert (high == 65535).all()


def test_cosmic_rays_hit_the_image_area_only() -> None:
    """Over many frames, pixels far above the noise appear in the image, never in the overscan."""
    rng = np.random.default_rng(5)
    structure = make_structure(SMALL, seed=2)
    assert SMALL.biassec is not None
    hits_image = hits_overscan = 0
    for _ in range(20):
        excess = make_raw_bias(SMALL, rng, structure=structure).astype(float) - structure
        excess -= np.median(excess)
        hits_image += int((excess[section_slices(SMALL.trimsec)] > 250).sum())
        hits_overscan += int((excess[section_slices(SMALL.biassec)] > 250).sum())
    assert hits_image > 0
    assert hits_overscan == 0


def test_structure_is_fixed_per_seed_and_flat_across_the_overscan() -> None:
    """make_structure repeats per seed, has hot columns, and is constant along overscan rows."""
    structure = make_structure(SMALL, seed=11)
    assert structure.dtype == np.float32 and structure.shape == SMALL.shape
    np.testing.assert_array_equal(structure, make_structure(SMALL, seed=11))
    assert not np.array_equal(structure, make_structure(SMALL, seed=12))
    image = structure[section_slices(SMALL.trimsec)]
    assert image.max() - np.median(image) > 20.0  # hot columns and the amplifier glow
    assert SMALL.biassec is not None
    overscan = structure[section_slices(SMALL.biassec)]
    np.testing.assert_allclose(overscan, overscan[:, :1].repeat(overscan.shape[1], axis=1))


def test_raw_bias_refuses_a_structure_of_another_shape() -> None:
    """Passing a structure made for another geometry is a ValueError."""
    other = Geometry(rows=8, cols=8, biassec=None, trimsec=Section(1, 8, 1, 8))
    with pytest.raises(ValueError, match="structure"):
        make_raw_bias(SMALL, np.random.default_rng(0), structure=make_structure(other, 0))


def test_camera_header_has_what_a_camera_program_writes(tmp_path: Path) -> None:
    """The header has uint16 BZERO, an accepted bias type, UTC DATE-OBS in ms and the sections."""
    camera = cryo_camera(tmp_path)
    local = datetime(2026, 11, 24, 20, 5, 6, 789123, tzinfo=timezone(timedelta(hours=-6)))
    header = camera_header(camera, SMALL, local, 7)
    assert (header["SIMPLE"], header["BITPIX"], header["BZERO"], header["BSCALE"]) == (
        True,
        16,
        32768,
        1,
    )
    assert (header["NAXIS1"], header["NAXIS2"]) == (288, 256)
    assert header["IMAGETYP"].lower() in camera.bias_values
    assert header["EXPTIME"] == 0.0
    assert header["DATE-OBS"] == "2026-11-25T02:05:06.789"
    assert (header["INSTRUME"], header["FRAMENO"]) == ("cryo", 7)
    assert (header["XBINNING"], header["YBINNING"]) == (1, 1)
    assert {"CCD-TEMP", "GAIN", "RDNOISE"} <= set(header)
    assert header["BIASSEC"] == "[257:288,1:256]"
    assert header["TRIMSEC"] == "[1:256,1:256]"


def test_camera_header_follows_the_camera_s_keywords_and_values(tmp_path: Path) -> None:
    """The camera's type keyword, bias value and section keywords are used; fixed ones are not."""
    camera = cryo_camera(
        tmp_path,
        imagetyp_keyword="OBSTYPE",
        bias_values=["zero"],
        calibrate={"overscan": "header:OVERSCAN", "trim": "[1:256,1:256]"},
    )
    header = camera_header(camera, SMALL, datetime(2026, 11, 25, 2, 0, tzinfo=UTC), 1)
    assert header["OBSTYPE"] == "ZERO" and "IMAGETYP" not in header
    assert header["OVERSCAN"] == "[257:288,1:256]"
    assert "TRIMSEC" not in header and "BIASSEC" not in header


def test_camera_header_refuses_a_naive_date(tmp_path: Path) -> None:
    """A DATE-OBS without a timezone is a ValueError, never guessed."""
    with pytest.raises(ValueError, match="timezone"):
        camera_header(cryo_camera(tmp_path), SMALL, datetime(2026, 11, 25, 2, 0), 1)


def test_frame_bytes_round_trips_uint16_through_bzero(tmp_path: Path) -> None:
    """frame_bytes writes BITPIX=16 BZERO=32768 and the pixels read back as the same uint16."""
    data = make_raw_bias(SMALL, np.random.default_rng(0))
    header = camera_header(
        cryo_camera(tmp_path), SMALL, datetime(2026, 11, 25, 2, 0, tzinfo=UTC), 1
    )
    with fits.open(io.BytesIO(frame_bytes(data, header))) as hdul:
        assert len(hdul) == 1
        assert (hdul[0].header["BITPIX"], hdul[0].header["BZERO"]) == (16, 32768)
        assert hdul[0].header["IMAGETYP"] == "BIAS"
        assert hdul[0].data.dtype == np.uint16
        np.testing.assert_array_equal(hdul[0].data, data)


@pytest.mark.parametrize(("hdu", "index", "name"), [("sci", 1, "SCI"), (2, 2, ""), ("1", 1, "")])
def test_frame_bytes_puts_the_image_in_the_camera_s_hdu(
    hdu: int | str, index: int, name: str
) -> None:
    """An hdu setting puts image and keywords in that extension after an empty primary."""
    data = np.full((4, 6), 1000, dtype=np.uint16)
    with fits.open(
        io.BytesIO(frame_bytes(data, fits.Header({"IMAGETYP": "BIAS"}), hdu=hdu))
    ) as hdul:
        assert len(hdul) == index + 1 and hdul[0].data is None
        assert hdul[index].name == (name or hdul[index].name)
        assert hdul[index].header["IMAGETYP"] == "BIAS"
        np.testing.assert_array_equal(hdul[index].data, data)


def test_write_in_pieces_never_overwrites(tmp_path: Path) -> None:
    """An existing file is left alone: FileExistsError."""
    path = tmp_path / "frame.fits"
    path.write_bytes(b"earlier")
    with pytest.raises(FileExistsError):
        write_in_pieces(path, b"later", pieces=2, delay=0.0)
    assert path.read_bytes() == b"earlier"


def test_simulate_writes_frames_the_camera_accepts(tmp_path: Path) -> None:
    """N named frames land in out_dir with a bias IMAGETYP, DATE-OBS = now(), fitting sections."""
    clock = FakeClock()
    camera = cryo_camera(tmp_path / "unused")
    seen: list[Path] = []

    def on_frame(path: Path) -> None:
        seen.append(path)
        clock.advance(7.25)

    paths = _simulate_quickly(camera, tmp_path / "out", 3, now=clock.now, on_frame=on_frame)
    assert paths == seen == sorted((tmp_path / "out").iterdir())
    assert all(NAME.match(p.name) for p in paths)
    assert paths[1].name == "cryo_20261125T020007_002_bias.fits"
    for number, path in enumerate(paths, start=1):
        header, data = _read(path)
        assert data.shape == SMALL.shape and data.dtype == np.uint16
        assert header[camera.imagetyp_keyword].lower() in camera.bias_values
        assert header["FRAMENO"] == number
        start = datetime(2026, 11, 25, 2, 0, tzinfo=UTC) + timedelta(seconds=7.25 * (number - 1))
        assert datetime.fromisoformat(header["DATE-OBS"]).replace(tzinfo=UTC) == start
        for keyword in ("BIASSEC", "TRIMSEC"):
            assert Section.parse(header[keyword]).problem_with(data.shape) is None


def test_simulate_defaults_to_the_camera_s_watch_directory(tmp_path: Path) -> None:
    """Without out_dir frames go to camera.watch[0] (created); fixed sections are not written."""
    watch = tmp_path / "incoming" / "te"
    camera = CameraConfig.model_validate(
        {
            "name": "te",
            "watch": [str(watch)],
            "calibrate": {"overscan": "none", "trim": "[1:64,1:64]"},
        }
    )
    paths = simulate(camera, frames=2, interval=0.0, seed=0, piece_delay=0.0)
    assert [p.parent for p in paths] == [watch, watch]
    header, data = _read(paths[0])
    assert data.shape == (64, 64)
    assert "BIASSEC" not in header and "TRIMSEC" not in header
    assert header["IMAGETYP"].lower() in camera.bias_values


def test_simulate_writes_into_the_camera_s_hdu(tmp_path: Path) -> None:
    """A camera configured with hdu='SCI' gets frames whose image is in extension SCI."""
    camera = cryo_camera(tmp_path, hdu="SCI")
    (path,) = _simulate_quickly(camera, tmp_path, 1)
    header, data = _read(path, "SCI")
    assert data.shape == SMALL.shape and header["BIASSEC"] == "[257:288,1:256]"


def test_simulated_frames_share_structure_but_not_noise(tmp_path: Path) -> None:
    """Calibrated frames share the fixed pattern: their difference is sqrt(2) x read noise."""
    paths = _simulate_quickly(cryo_camera(tmp_path), tmp_path, 4)
    frames = [_read(p) for p in paths]
    calibrated = [_calibrate(header, data) for header, data in frames]
    # 8 ADU read noise; the per-row overscan median of 32 pixels adds
    # (pi/2) * 8**2 / 32 ADU**2 of variance, i.e. 2.4 % more rms.
    expected = np.sqrt(2.0) * 8.0 * np.sqrt(1 + np.pi / 2 / 32)
    for first, second in itertools.pairwise(calibrated):
        difference = first - second
        assert mad_std(difference) == pytest.approx(expected, rel=0.05)
        assert abs(float(np.median(difference))) < 1.0  # overscan subtraction removed the drift
    mean = np.mean(calibrated, axis=0)
    assert np.std(mean) > 2 * 8.0 / np.sqrt(len(calibrated))  # the fixed pattern survives averaging
    assert SMALL.biassec is not None
    overscan = section_slices(SMALL.biassec)
    overscan_levels = [np.median(data[overscan]) for _, data in frames]
    assert np.ptp(overscan_levels) >= 1.0  # the offset drifts from frame to frame
