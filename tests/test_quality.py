"""Frame quality on the real service: frames that do not belong are left out of the master."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from service_process import catalog_rows, running_service, write_config

# A night far ahead, so no clock-driven rule (quiet period, night end) closes the
# set: it completes by count, after all frames are in.
DATE_OBS = "2030-01-15T03:00:{second:02d}"
NIGHT = "2030-01-14"


def write_raw(
    path: Path,
    seed: int,
    *,
    image_offset: float = 0.0,
    image_noise: float = 5.0,
    kind: str = "BIAS",
) -> Path:
    """A cryo raw frame (48 image + 8 overscan columns) whose image sits above its overscan."""
    rng = np.random.default_rng(seed)
    data = 1000.0 + rng.normal(0.0, 5.0, (40, 56))
    data[:, :48] = 1000.0 + image_offset + rng.normal(0.0, image_noise, (40, 48))
    header = fits.Header()
    header["IMAGETYP"] = kind
    header["DATE-OBS"] = DATE_OBS.format(second=seed)
    header["BIASSEC"] = "[49:56,1:40]"
    header["TRIMSEC"] = "[1:48,1:40]"
    hdu = fits.PrimaryHDU(np.clip(np.round(data), 0, 65535).astype(np.uint16), header)
    hdu.writeto(path)
    return path


def test_light_leak_flat_and_settling_frames_are_left_out_with_reasons(tmp_path: Path) -> None:
    """Three bad frames among six good ones are rejected with their reasons; the master has six."""
    config = write_config(tmp_path, expected_frames=9, settle_seconds=0.2)
    incoming = tmp_path / "incoming" / "cryo"
    bad = {
        "leak.fits": {"image_offset": 40.0},  # stray light on the image, not the overscan
        "flat.fits": {"image_offset": 20000.0, "image_noise": 140.0},  # a flat called BIAS
        "settling.fits": {"image_offset": 12.0},  # first frame after a readout-mode change
    }
    with running_service(config) as service:
        written = [write_raw(incoming / f"good{i}.fits", i) for i in range(6)]
        for seed, (name, change) in enumerate(bad.items(), start=10):
            written.append(write_raw(incoming / name, seed, **change))
        before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in written}
        (published,) = service.wait_event("master.published", timeout=120)
        outliers = service.events("frame.outlier")
        assert service.stop()[0] == 0
    assert sorted(Path(e["file"]).name for e in outliers) == sorted(bad)
    rows = {Path(r["path"]).name: r for r in catalog_rows(config, "SELECT * FROM frames")}
    for name in bad:
        assert rows[name]["status"] == "rejected"
        assert "robust sigma from the set's" in rows[name]["reason"]
    assert rows["leak.fits"]["reason"].startswith("level 40.")
    assert {rows[f"good{i}.fits"]["status"] for i in range(6)} == {"combined"}
    header = fits.getheader(published["path"])
    assert header["NCOMBINE"] == 6
    assert sorted(v for k, v in header.items() if k.startswith("IMCMB")) == [
        f"good{i}.fits" for i in range(6)
    ]
    assert published["night"] == NIGHT
    # Read noise 5 ADU per frame, plus the per-row overscan median each calibration
    # subtracts (8 pixels: ~1.25 x 5 / sqrt(8) = 2.2 ADU): about 5.5 from input pairs;
    # the master of 6 frames has about 5.5 / sqrt(6) = 2.2.
    assert 4.5 < header["QC_RON"] < 6.5
    assert header["QC_RONEX"] == pytest.approx(header["QC_RON"] / 6**0.5, rel=1e-3)
    assert header["QC_NOISE"] < header["QC_RON"] / 2
    assert published["read_noise"] == pytest.approx(header["QC_RON"], abs=1e-3)
    (stored,) = catalog_rows(config, "SELECT qc FROM masters")
    assert json.loads(stored["qc"])["read_noise"] == pytest.approx(header["QC_RON"], abs=1e-3)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in written}
    assert after == before  # raw files untouched
