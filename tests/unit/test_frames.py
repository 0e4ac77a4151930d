"""Frames on disk: readiness, FITS completeness, reading, classification, dates."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from biaswatch.config import CameraConfig
from biaswatch.errors import FrameRejected
from biaswatch.fitsbytes import fits_status
from biaswatch.frames.readiness import (
    Readiness,
    classify,
    geometry,
    observation_time,
    read_frame,
)
from biaswatch.testing.fits import fits_bytes, make_bias_fits


class TestReadiness:
    def test_waits_for_settle_time(self, tmp_path: Path) -> None:
        """A file is ready only after its size and mtime were unchanged for settle seconds."""
        path = tmp_path / "a.fits"
        path.write_bytes(b"x" * 10)
        ready = Readiness()
        ready.note(path, settle=2.0, now=0.0)
        assert ready.settled(0.0) == []  # first look records size/mtime
        assert ready.settled(1.9) == []
        assert ready.settled(2.0) == [path]

    def test_growth_restarts_the_settle_time(self, tmp_path: Path) -> None:
        """A file still growing is waited for, not declared ready."""
        path = tmp_path / "a.fits"
        path.write_bytes(b"x" * 10)
        ready = Readiness()
        ready.note(path, settle=2.0, now=0.0)
        ready.settled(0.0)
        with open(path, "ab") as f:
            f.write(b"y" * 10)
        os.utime(path, ns=(1, 10**9))
        assert ready.settled(1.5) == []
        assert ready.settled(3.0) == []
        assert ready.settled(3.5) == [path]

    def test_closed_file_is_ready_at_once(self, tmp_path: Path) -> None:
        """A close-for-write event makes the file ready without waiting for settle."""
        path = tmp_path / "a.fits"
        path.write_bytes(b"x")
        ready = Readiness()
        ready.note(path, settle=60.0, now=0.0, closed=True)
        assert ready.settled(0.1) == [path]

    def test_vanished_file_is_dropped(self, tmp_path: Path) -> None:
        """A file deleted before it settled is forgotten."""
        path = tmp_path / "a.fits"
        path.write_bytes(b"x")
        ready = Readiness()
        ready.note(path, settle=0.0, now=0.0)
        path.unlink()
        assert ready.settled(1.0) == []
        assert path not in ready


class TestFitsStatus:
    @pytest.mark.parametrize("layout", ["primary", "extension"])
    def test_complete_file(self, tmp_path: Path, layout: str) -> None:
        """A whole FITS file is complete."""
        path = make_bias_fits(tmp_path / "a.fits", layout=layout)  # type: ignore[arg-type]
        assert fits_status(path).state == "complete"

    def test_complete_compressed_file(self, tmp_path: Path) -> None:
        """A tile-compressed .fits.fz (binary table with heap) is complete."""
        path = make_bias_fits(tmp_path / "a.fits.fz", layout="compressed")
        assert fits_status(path).state == "complete"

    def test_missing_final_padding_is_complete(self, tmp_path: Path) -> None:
        """A file that stops at its last data byte (no block padding) is complete."""
        content = fits_bytes(shape=(10, 10))
        header_bytes = 2880 * ((content.find(b"END     ") // 2880) + 1)
        path = tmp_path / "a.fits"
        path.write_bytes(content[: header_bytes + 10 * 10 * 2])
        assert fits_status(path).state == "complete"

    def test_truncated_data_is_incomplete(self, tmp_path: Path) -> None:
        """A file shorter than its header announces is incomplete, with byte counts."""
        content = fits_bytes(shape=(40, 48))
        path = tmp_path / "a.fits"
        path.write_bytes(content[:-3000])
        status = fits_status(path)
        assert status.state == "incomplete"
        assert "primary HDU data:" in status.detail
        assert "of 3840 bytes" in status.detail

    def test_header_without_end_is_incomplete(self, tmp_path: Path) -> None:
        """A header whose END card has not arrived is incomplete."""
        path = tmp_path / "a.fits"
        content = fits_bytes()
        end_card = content.find(b"END" + b" " * 77)
        path.write_bytes(content[:end_card])  # every card before END, as a writer mid-header
        assert fits_status(path).state == "incomplete"
        assert fits_status(path).detail == "header has no END card"

    def test_random_bytes_are_not_fits(self, tmp_path: Path) -> None:
        """Random bytes named .fits are recognised as not FITS."""
        path = tmp_path / "a.fits"
        path.write_bytes(np.random.default_rng(1).bytes(5000))
        assert fits_status(path).state == "not_fits"

    def test_empty_file_is_incomplete(self, tmp_path: Path) -> None:
        """An empty file (just created) is waited for."""
        path = tmp_path / "a.fits"
        path.touch()
        assert fits_status(path).state == "incomplete"


class TestReadFrame:
    @pytest.mark.parametrize(
        ("layout", "dtype", "name"),
        [
            ("primary", "uint16", "a.fits"),
            ("primary", "uint32", "a.fits"),
            ("primary", "int16", "a.fits"),
            ("primary", "float32", "a.fits"),
            ("extension", "uint16", "a.fits"),
            ("compressed", "uint16", "a.fits.fz"),
        ],
    )
    def test_reads_the_image_as_written(
        self, tmp_path: Path, camera: CameraConfig, layout: str, dtype: str, name: str
    ) -> None:
        """The first HDU with data is read, with BZERO applied, from every layout."""
        path = make_bias_fits(tmp_path / name, layout=layout, dtype=dtype)  # type: ignore[arg-type]
        frame = read_frame(path, camera)
        with fits.open(path) as hdul:
            expected = next(h.data for h in hdul if h.data is not None)
        assert frame.image.shape == (40, 48)
        np.testing.assert_array_equal(frame.image, expected)
        assert 900 < float(frame.image.mean()) < 1100
        assert frame.header["IMAGETYP"] == "BIAS"
        assert len(frame.sha256) == 64

    def test_camera_hdu_setting_picks_the_hdu(self, tmp_path: Path) -> None:
        """A camera's hdu setting names the HDU to read."""
        camera = CameraConfig(name="c", watch=(tmp_path,), hdu="SCI")
        path = make_bias_fits(tmp_path / "a.fits", layout="extension")
        assert read_frame(path, camera).image.shape == (40, 48)
        missing = CameraConfig(name="c", watch=(tmp_path,), hdu=5)
        with pytest.raises(FrameRejected, match="no HDU 5"):
            read_frame(path, missing)

    def test_primary_keywords_are_merged_into_extension_header(
        self, tmp_path: Path, camera: CameraConfig
    ) -> None:
        """IMAGETYP in the primary header is seen when the image is in an extension."""
        hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 4), np.float32))])
        hdul[0].header["IMAGETYP"] = "ZERO"
        path = tmp_path / "a.fits"
        hdul.writeto(path)
        kind = classify(read_frame(path, camera).header, camera)
        assert (kind.is_bias, kind.imagetyp) == (True, "ZERO")

    def test_random_bytes_rejected(self, tmp_path: Path, camera: CameraConfig) -> None:
        """A non-FITS file is rejected as corrupt."""
        path = tmp_path / "a.fits"
        path.write_bytes(b"SIMPLE  =" + np.random.default_rng(2).bytes(6000))
        with pytest.raises(FrameRejected, match="corrupt FITS"):
            read_frame(path, camera)

    def test_raw_file_is_not_modified(self, tmp_path: Path, camera: CameraConfig) -> None:
        """Reading leaves the raw file's bytes and mtime untouched."""
        path = make_bias_fits(tmp_path / "a.fits")
        before = (path.read_bytes(), path.stat().st_mtime_ns)
        read_frame(path, camera)
        assert (path.read_bytes(), path.stat().st_mtime_ns) == before


class TestClassify:
    @pytest.mark.parametrize("value", ["BIAS", "bias", "Zero", " Bias Frame "])
    def test_bias_values_case_insensitive(self, camera: CameraConfig, value: str) -> None:
        """Configured bias values match regardless of case and padding."""
        assert classify(fits.Header({"IMAGETYP": value}), camera).is_bias is True

    def test_other_types_are_not_bias(self, camera: CameraConfig) -> None:
        """A flat is not a bias."""
        kind = classify(fits.Header({"IMAGETYP": "FLAT"}), camera)
        assert (kind.is_bias, kind.imagetyp) == (False, "FLAT")
        assert kind.reason == "IMAGETYP = 'FLAT' is not a bias"

    def test_missing_keyword_is_rejected(self, camera: CameraConfig) -> None:
        """A frame without the configured keyword is rejected, naming the keyword."""
        with pytest.raises(FrameRejected, match="missing IMAGETYP keyword"):
            classify(fits.Header(), camera)

    def test_configured_keyword(self, tmp_path: Path) -> None:
        """imagetyp_keyword and bias_values come from the camera's config."""
        camera = CameraConfig(
            name="c", watch=(tmp_path,), imagetyp_keyword="obstype", bias_values=("BIAS",)
        )
        assert classify(fits.Header({"OBSTYPE": "bias"}), camera).is_bias is True


class TestDatesAndGeometry:
    def test_date_obs_is_used(self, tmp_path: Path, camera: CameraConfig) -> None:
        """DATE-OBS gives the observation time, without a note."""
        frame = read_frame(make_bias_fits(tmp_path / "a.fits"), camera)
        assert observation_time(frame) == (dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC), None)

    @pytest.mark.parametrize(("date_obs", "word"), [(None, "missing"), ("soon", "unparsable")])
    def test_mtime_fallback_with_note(
        self, tmp_path: Path, camera: CameraConfig, date_obs: str | None, word: str
    ) -> None:
        """Without a usable DATE-OBS the file mtime is used and a note says so."""
        path = make_bias_fits(tmp_path / "a.fits", date_obs=date_obs)
        os.utime(path, (1_790_000_000, 1_790_000_000))
        when, note = observation_time(read_frame(path, camera))
        assert when == dt.datetime.fromtimestamp(1_790_000_000, dt.UTC)
        assert note is not None
        assert note.startswith(f"DATE-OBS {word}")

    def test_geometry_includes_binning(self, tmp_path: Path, camera: CameraConfig) -> None:
        """Geometry is the raw shape plus XBINNING/YBINNING."""
        frame = read_frame(make_bias_fits(tmp_path / "a.fits", binning=(2, 2)), camera)
        assert geometry(frame.header, [("", frame.image.shape)], camera).label() == "48x40-2x2"

    def test_bad_binning_is_rejected(self, tmp_path: Path, camera: CameraConfig) -> None:
        """A non-numeric XBINNING is that frame's error."""
        frame = read_frame(make_bias_fits(tmp_path / "a.fits", header={"XBINNING": "two"}), camera)
        with pytest.raises(FrameRejected, match="XBINNING = 'two'"):
            geometry(frame.header, [("", frame.image.shape)], camera)
