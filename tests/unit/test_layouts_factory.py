"""The raw-layout factory (biaswatch.testing.layouts) writes the frames issue 13 describes."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.testing.layouts import (
    BIAS_LABELS,
    LAYOUT_KINDS,
    amplifiers_layout,
    date_cards,
    extensions_layout,
    layout_bytes,
    layout_named,
    write_layout_frame,
)


def test_same_seed_same_bytes() -> None:
    """Every layout gives the same bytes for the same seed and other bytes for another seed."""
    for kind in LAYOUT_KINDS:
        layout = layout_named(kind)
        assert layout_bytes(layout, seed=3) == layout_bytes(layout, seed=3)
        assert layout_bytes(layout, seed=3) != layout_bytes(layout, seed=4)


def test_extensions_have_names_levels_and_datasec_only(tmp_path: Path) -> None:
    """N extensions carry their EXTNAME, DATASEC without BIASSEC, uint16 with BZERO, own levels."""
    layout = extensions_layout(4, levels=[900, 950, 1000, 1050], names=["A1", "A2", "A3", "A4"])
    path = write_layout_frame(tmp_path / "x.fits", layout, header=BIAS_LABELS["obstype"])
    with fits.open(path) as hdul:
        assert hdul[0].data is None
        assert hdul[0].header["OBSTYPE"] == "Bias"
        assert [h.name for h in hdul[1:]] == ["A1", "A2", "A3", "A4"]
        for hdu, level in zip(hdul[1:], [900, 950, 1000, 1050], strict=True):
            assert hdu.header["DATASEC"] == "[1:40,1:40]"
            assert "BIASSEC" not in hdu.header
            assert hdu.header["BZERO"] == 32768
            assert hdu.data.dtype == np.uint16
            assert abs(float(np.median(hdu.data[:, 40:])) - level) < 3


def test_extensions_biassec_when_asked() -> None:
    """With biassec=True each extension says BIASSEC, its last overscan column left out."""
    raw = layout_bytes(extensions_layout(2, biassec=True))
    with fits.open(io.BytesIO(raw)) as hdul:
        assert hdul[1].header["BIASSEC"] == "[41:47,1:40]"


def test_amplifiers_levels_side_by_side(tmp_path: Path) -> None:
    """Two amplifiers in one image: data at 944 and 966 ADU, each overscan at its own level."""
    layout = amplifiers_layout()
    path = write_layout_frame(tmp_path / "a.fits", layout, noise=1.0)
    data = fits.getdata(path).astype(float)
    assert data.shape == (35, 80)
    assert abs(np.median(data[:, :32]) - 945.5) < 1  # 944 + the 3 ADU row ramp's middle
    assert abs(np.median(data[:, 32:64]) - 967.5) < 1
    assert abs(np.median(data[:, 65:72]) - 945.5) < 1
    assert abs(np.median(data[:, 73:80]) - 967.5) < 1
    tables = layout.amplifier_tables()
    assert tables[1] == {"name": "B", "data": "[33:64,1:35]", "overscan": "[74:80,1:35]"}


def test_binned_and_keywords(tmp_path: Path) -> None:
    """The binned layout writes CCDSUM; header= sets and deletes cards; signal lifts data only."""
    when = dt.datetime(2013, 5, 7, 3, 4, 5, tzinfo=dt.UTC)
    cards = {**BIAS_LABELS["object"], **date_cards(when, date_only=True), "CCDSPEED": "FAST"}
    path = write_layout_frame(tmp_path / "b.fits", layout_named("binned"), header=cards, signal=500)
    header = fits.getheader(path)
    assert header["CCDSUM"] == "2 1"
    assert header["DATE-OBS"] == "2013-05-07"
    assert header["UT"] == "03:04:05.000"
    assert header["OBJECT"] == "bias" and header["ELAPTIME"] == 0
    assert "EXPTIME" not in header and header["CCDSPEED"] == "FAST"
    data = fits.getdata(path).astype(float)
    assert np.median(data[:, :24]) - np.median(data[:, 24:]) > 450


def test_simulated_layout_frames_satisfy_the_cameras_bias_when(tmp_path: Path) -> None:
    """simulate --layout labels frames by the camera's bias_when, so its own camera takes them."""
    from biaswatch.config import CameraConfig
    from biaswatch.frames.readiness import classify, read_frame
    from biaswatch.testing.layouts import simulate_layout

    camera = CameraConfig.model_validate(
        {
            "name": "echelle",
            "watch": [str(tmp_path)],
            "bias_when": {"OBSTYPE": "bias", "EXPTIME": 0},
            "calibrate": {"overscan": "auto", "trim": "header:DATASEC"},
        }
    )
    (path,) = simulate_layout(camera, "extensions", frames=1, interval=0, piece_delay=0)
    kind = classify(read_frame(path, camera).header, camera)
    assert kind.is_bias, kind.reason
