"""Segments (issue 13): several image HDUs, amplifiers in one image, overscan = "auto"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.modeling.models import Polynomial1D
from astropy.nddata import CCDData
from structlog.testing import capture_logs

from biaswatch.catalog.rows import FrameRecord
from biaswatch.config import CameraConfig, SiteConfig
from biaswatch.frames.read import ingest
from biaswatch.settings import CalibrateSettings
from biaswatch.testing.layouts import (
    BIAS_LABELS,
    RawLayout,
    amplifiers_layout,
    extensions_layout,
    single_layout,
    write_layout_frame,
)


def _camera(tmp_path: Path, name: str = "cam", **calibrate: Any) -> CameraConfig:
    return CameraConfig(
        name=name, watch=(tmp_path,), calibrate=CalibrateSettings.model_validate(calibrate)
    )


def _ingest(tmp_path: Path, layout: RawLayout, camera: CameraConfig, **options: Any) -> FrameRecord:
    raw = write_layout_frame(tmp_path / f"{options.pop('stem', 'f')}.fits", layout, **options)
    return ingest(raw, camera, SiteConfig(), tmp_path / "work")


def _ccdproc_segment(
    raw: Path, hdu: int | str, overscan: str, trim: str, model: Any = None
) -> np.ndarray:
    """The seed's recipe for one segment: subtract_overscan (median) then trim_image."""
    ccd = CCDData.read(raw, hdu=hdu, unit="adu")
    ccd = ccdproc.subtract_overscan(ccd, fits_section=overscan, median=True, model=model)
    return np.asarray(ccdproc.trim_image(ccd, fits_section=trim).data)


def test_extensions_each_calibrated_like_ccdproc(tmp_path: Path) -> None:
    """Three extensions with DATASEC only: one work HDU each, equal to ccdproc's recipe per HDU."""
    layout = extensions_layout(3, levels=[900, 1000, 1100])
    camera = _camera(tmp_path, overscan="auto", trim="header:DATASEC")
    record = _ingest(tmp_path, layout, camera, header=BIAS_LABELS["imagetyp"])
    assert record.status == "valid", record.reason
    assert record.calibrated is not None
    raw = tmp_path / "f.fits"
    with fits.open(record.calibrated) as work:
        assert work[0].data is None
        assert [h.name for h in work[1:]] == ["CCD1", "CCD2", "CCD3"]
        for index, hdu in enumerate(work[1:], start=1):
            assert hdu.data.dtype.kind == "f" and hdu.data.dtype.itemsize == 4
            expected = _ccdproc_segment(raw, index, "[41:48,1:40]", "[1:40,1:40]")
            np.testing.assert_allclose(hdu.data, expected, atol=1e-3)
            assert "DATASEC" not in hdu.header
    assert [name for name, _ in record.segments_qc] == ["CCD1", "CCD2", "CCD3"]
    assert all(abs(qc.level) < 2 for _, qc in record.segments_qc)
    assert record.qc is not None
    assert record.qc.noise == max(qc.noise for _, qc in record.segments_qc)


def test_extensions_with_biassec_use_it_under_auto(tmp_path: Path) -> None:
    """overscan = "auto" takes BIASSEC when the HDU has it (its last column left out here)."""
    layout = extensions_layout(2, biassec=True)
    camera = _camera(tmp_path, overscan="auto", trim="header:DATASEC")
    record = _ingest(tmp_path, layout, camera)
    assert record.status == "valid", record.reason
    assert record.calibrated is not None
    expected = _ccdproc_segment(tmp_path / "f.fits", 2, "[41:47,1:40]", "[1:40,1:40]")
    np.testing.assert_allclose(fits.getdata(record.calibrated, 2), expected, atol=1e-3)


def test_auto_overscan_is_logged_once_per_camera(tmp_path: Path) -> None:
    """calibrate.overscan_chosen is logged once per camera and source, not once per frame."""
    layout = extensions_layout(2)
    camera = _camera(tmp_path, name="logged-once", overscan="auto", trim="header:DATASEC")
    with capture_logs() as logs:
        for seed in range(3):
            assert _ingest(tmp_path, layout, camera, seed=seed, stem=f"s{seed}").status == "valid"
    chosen = [e for e in logs if e["event"] == "calibrate.overscan_chosen"]
    assert chosen == [
        {
            "event": "calibrate.overscan_chosen",
            "camera": "logged-once",
            "source": "after DATASEC",
            "log_level": "info",
        }
    ]


def test_auto_without_datasec_is_a_clear_error(tmp_path: Path) -> None:
    """overscan = "auto" on a frame with neither BIASSEC nor DATASEC rejects it, naming both."""
    camera = _camera(tmp_path, overscan="auto", trim="none")
    record = _ingest(tmp_path, single_layout(), camera, header={"DATASEC": None, "BIASSEC": None})
    assert record.status == "rejected"
    assert record.reason is not None
    assert "no BIASSEC" in record.reason and "DATASEC is missing" in record.reason


def test_auto_with_datasec_to_the_edge_is_a_clear_error(tmp_path: Path) -> None:
    """DATASEC reaching the last column leaves no overscan: the frame's error says so."""
    camera = _camera(tmp_path, overscan="auto", trim="none")
    cards = {"BIASSEC": None, "DATASEC": "[1:48,1:40]"}
    record = _ingest(tmp_path, single_layout(), camera, header=cards)
    assert record.status == "rejected"
    assert record.reason is not None and "leaving no overscan" in record.reason


def test_camera_hdu_keeps_one_segment(tmp_path: Path) -> None:
    """With the camera's hdu set, a frame of several extensions is one unnamed segment as before."""
    camera = CameraConfig(
        name="c",
        watch=(tmp_path,),
        hdu="CCD2",
        calibrate=CalibrateSettings.model_validate({"overscan": "auto", "trim": "header:DATASEC"}),
    )
    record = _ingest(tmp_path, extensions_layout(3), camera)
    assert (record.status, record.segments_qc, record.geometry) == ("valid", (), "48x40-1x1")


def test_segment_layouts_get_their_own_geometry(tmp_path: Path) -> None:
    """Two and three extensions, and one image, are three geometries (never one set)."""
    camera = _camera(tmp_path, overscan="auto", trim="header:DATASEC")
    labels = {
        _ingest(tmp_path, extensions_layout(n), camera, stem=f"n{n}").geometry for n in (1, 2, 3)
    }
    assert len(labels) == 3


def _amp_camera(tmp_path: Path, layout: RawLayout, **extra: Any) -> CameraConfig:
    return _camera(tmp_path, amplifiers=[{**t, **extra} for t in layout.amplifier_tables()])


def test_two_amplifiers_no_step_and_like_ccdproc(tmp_path: Path) -> None:
    """Amplifiers at 944 and 966 ADU both go to ~0, with no step, each as ccdproc's recipe."""
    layout = amplifiers_layout()
    record = _ingest(tmp_path, layout, _amp_camera(tmp_path, layout), noise=2.0)
    assert record.status == "valid", record.reason
    assert record.calibrated is not None
    data = fits.getdata(record.calibrated)
    header = fits.getheader(record.calibrated)
    assert data.shape == (35, 64) and data.dtype.kind == "f" and data.dtype.itemsize == 4
    step = float(np.median(data[:, 32]) - np.median(data[:, 31]))
    assert abs(step) < 1.5  # 22 ADU with one overscan for both
    raw = tmp_path / "f.fits"
    for index, amp in enumerate(layout.segments, start=1):
        assert (header[f"BWAN{index}"], header[f"BWAS{index}"]) == (
            amp.name,
            amp.data.fits_string(),
        )
        expected = _ccdproc_segment(raw, 0, amp.overscan.fits_string(), amp.data.fits_string())
        cols = slice(amp.data.x1 - 1, amp.data.x2)
        np.testing.assert_allclose(data[:, cols], expected, atol=1e-3)
    assert header["BWNAMP"] == 2
    assert [name for name, _ in record.segments_qc] == ["A", "B"]
    assert all(abs(qc.level) < 1 for _, qc in record.segments_qc)


def test_amplifier_polynomial_model_like_ccdproc(tmp_path: Path) -> None:
    """An amplifier's own overscan_model poly:1 gives ccdproc's result with Polynomial1D(1)."""
    layout = amplifiers_layout()
    camera = _amp_camera(tmp_path, layout, overscan_model="poly:1")
    record = _ingest(tmp_path, layout, camera)
    assert record.status == "valid", record.reason
    assert record.calibrated is not None
    amp = layout.segments[1]
    expected = _ccdproc_segment(
        tmp_path / "f.fits",
        0,
        amp.overscan.fits_string(),
        amp.data.fits_string(),
        Polynomial1D(degree=1),
    )
    np.testing.assert_allclose(fits.getdata(record.calibrated)[:, 32:], expected, atol=1e-3)


def test_amplifiers_in_each_extension_are_named_ext_dot_amp(tmp_path: Path) -> None:
    """Amplifiers in every extension give segments EXTNAME.AMP and one BWNAMP image per HDU."""
    layout = extensions_layout(2, data_cols=32, overscan_cols=8)
    amps = [
        {"name": "L", "data": "[1:16,1:40]", "overscan": "[33:36,1:40]"},
        {"name": "R", "data": "[17:32,1:40]", "overscan": "[37:40,1:40]"},
    ]
    record = _ingest(tmp_path, layout, _camera(tmp_path, amplifiers=amps))
    assert record.status == "valid", record.reason
    names = [name for name, _ in record.segments_qc]
    assert names == ["CCD1.L", "CCD1.R", "CCD2.L", "CCD2.R"]
    assert record.calibrated is not None
    assert fits.getheader(record.calibrated, "CCD2")["BWAS2"] == "[17:32,1:40]"


@pytest.mark.parametrize(
    ("amps", "reason"),
    [
        (
            [
                {"name": "A", "data": "[1:40,1:40]", "overscan": "[41:48,1:40]"},
                {"name": "B", "data": "[30:40,1:40]", "overscan": "[41:48,1:40]"},
            ],
            "440 pixels in two amplifiers",
        ),
        (
            [{"name": "A", "data": "[1:40,1:20]", "overscan": "[41:48,1:40]"}],
            "amplifier A: overscan [41:48,1:40] does not cover the same rows",
        ),
        (
            [{"name": "A", "data": "[1:40,1:40]", "overscan": "header:AMPBIAS"}],
            "amplifier A overscan = header:AMPBIAS: keyword AMPBIAS is missing",
        ),
    ],
)
def test_amplifier_errors_are_the_frames(
    tmp_path: Path, amps: list[dict[str, str]], reason: str
) -> None:
    """Overlapping data, an overscan beside other rows, a missing keyword: clear frame errors."""
    record = _ingest(tmp_path, single_layout(), _camera(tmp_path, amplifiers=amps))
    assert record.status == "rejected"
    assert record.reason is not None and reason in record.reason, record.reason


def test_duplicate_extnames_get_their_extver(tmp_path: Path) -> None:
    """Extensions all named SCI (Gemini's SCI,1 SCI,2) become segments SCI_1 and SCI_2."""
    layout = extensions_layout(2, names=["SCI", "SCI"])
    raw = write_layout_frame(tmp_path / "f.fits", layout)
    with fits.open(raw, mode="update") as hdul:
        for version, hdu in enumerate(hdul[1:], start=1):
            hdu.header["EXTVER"] = version
    camera = _camera(tmp_path, overscan="auto", trim="header:DATASEC")
    record = ingest(raw, camera, SiteConfig(), tmp_path / "work")
    assert [name for name, _ in record.segments_qc] == ["SCI_1", "SCI_2"]


def test_a_table_beside_the_image_is_no_segment(tmp_path: Path) -> None:
    """A binary table after the image (camera metadata) leaves one unnamed segment, as before."""
    raw = write_layout_frame(tmp_path / "f.fits", single_layout())
    with fits.open(raw) as hdul:
        table = fits.BinTableHDU.from_columns([fits.Column(name="T", format="E", array=[1.0])])
        fits.HDUList([hdul[0], table]).writeto(tmp_path / "t.fits")
    record = ingest(tmp_path / "t.fits", _camera(tmp_path), SiteConfig(), tmp_path / "work")
    assert (record.status, record.segments_qc, record.geometry) == ("valid", (), "48x40-1x1")


def test_the_image_after_a_table_is_the_one_segment(tmp_path: Path) -> None:
    """An empty primary, a table, then the image: the image is read, the table left alone."""
    raw = write_layout_frame(tmp_path / "f.fits", single_layout())
    with fits.open(raw) as hdul:
        table = fits.BinTableHDU.from_columns([fits.Column(name="T", format="E", array=[1.0])])
        image = fits.ImageHDU(hdul[0].data, hdul[0].header, name="SCI")
        fits.HDUList([fits.PrimaryHDU(), table, image]).writeto(tmp_path / "t.fits")
    record = ingest(tmp_path / "t.fits", _camera(tmp_path), SiteConfig(), tmp_path / "work")
    assert (record.status, record.segments_qc, record.geometry) == ("valid", (), "48x40-1x1")


def test_amplifier_sections_are_said_in_the_calibrated_image(tmp_path: Path) -> None:
    """With a prescan and a first row left out, BWAS<i> counts from the bounding box's corner."""
    amps = [
        {"name": "L", "data": "[3:20,2:40]", "overscan": "[41:44,2:40]"},
        {"name": "R", "data": "[21:40,2:40]", "overscan": "[45:48,2:40]"},
    ]
    record = _ingest(tmp_path, single_layout(), _camera(tmp_path, amplifiers=amps))
    assert record.status == "valid", record.reason
    assert record.calibrated is not None
    header = fits.getheader(record.calibrated)
    assert fits.getdata(record.calibrated).shape == (39, 38)
    assert (header["BWAS1"], header["BWAS2"]) == ("[1:18,1:39]", "[19:38,1:39]")
    rows = ccdproc.trim_image(CCDData.read(tmp_path / "f.fits", unit="adu"), "[1:48,2:40]")
    rows = ccdproc.subtract_overscan(rows, fits_section="[45:48,1:39]", median=True)
    expected = ccdproc.trim_image(rows, fits_section="[21:40,1:39]").data
    np.testing.assert_allclose(fits.getdata(record.calibrated)[:, 18:], expected, atol=1e-3)


def test_amplifiers_with_parallel_overscans_like_ccdproc(tmp_path: Path) -> None:
    """overscan_axis 0 per amplifier: rows of overscan above each, one value per column."""
    amps = [
        {"name": "T", "data": "[1:48,1:16]", "overscan": "[1:48,33:36]", "overscan_axis": 0},
        {"name": "U", "data": "[1:48,17:32]", "overscan": "[1:48,37:40]", "overscan_axis": 0},
    ]
    record = _ingest(tmp_path, single_layout(), _camera(tmp_path, amplifiers=amps))
    assert record.status == "valid", record.reason
    assert record.calibrated is not None
    ccd = CCDData.read(tmp_path / "f.fits", unit="adu")
    ccd = ccdproc.subtract_overscan(ccd, fits_section="[1:48,37:40]", overscan_axis=0, median=True)
    expected = ccdproc.trim_image(ccd, fits_section="[1:48,17:32]").data
    data = fits.getdata(record.calibrated)
    assert data.shape == (32, 48)
    np.testing.assert_allclose(data[16:, :], expected, atol=1e-3)
