"""The real service on a camera whose biases are darks of 0 s, read out at two speeds.

Issue 13 parts 4-6, as a spectrograph writes them: OBSTYPE = 'DARK' on biases,
darks and flats alike, EXPTIME = 0 only on biases; DATE-OBS a date with the time
in UT; CCDSUM for binning; CCDSPEED in two modes in one night. The non-biases are
ignored with their reason and the two speeds make two sets and two masters.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from astropy.io import fits

from biaswatch.testing.fits import fits_bytes
from biaswatch.testing.service import catalog_rows, running_service

NIGHT = "2030-01-14"  # 2030-01-15 02:xx UTC is the evening of the 14th in Chicago


def config_file(tmp_path: Path) -> Path:
    """Camera spec: bias_when on OBSTYPE and EXPTIME, split by CCDSPEED, 3 frames a set."""
    (tmp_path / "incoming").mkdir()
    path = tmp_path / "config.toml"
    path.write_text(
        textwrap.dedent(
            """
            [service]
            state_dir = "state"
            masters_dir = "masters"
            log_file = "log/biaswatch.jsonl"
            poll_seconds = 0.1
            [site]
            timezone = "America/Chicago"
            [cameras.spec]
            watch = ["incoming"]
            settle_seconds = 0.3
            expected_frames = 3
            date_range = ["1980-01-01", "2100-01-01"]
            night_end = "11:59"
            bias_when = { OBSTYPE = "dark", EXPTIME = 0 }
            group_by = ["CCDSPEED"]
            """
        ),
        encoding="utf-8",
    )
    return path


def put(directory: Path, name: str, seed: int, **cards: object) -> Path:
    """Write a raw 40 x 48 frame (8 overscan columns) dated by date + UT, then rename it in."""
    header = {"DATE-OBS": "2030-01-15", "UT": f"02:{seed:02d}:00", "CCDSUM": "2 1", **cards}
    content = fits_bytes(imagetyp=None, date_obs=None, seed=seed, header=header)
    part = directory / f".{name}.part"
    part.write_bytes(content)
    os.replace(part, directory / name)
    return directory / name


def test_darks_of_zero_seconds_at_two_speeds_make_two_masters(tmp_path: Path) -> None:
    """Six 0 s darks, three per speed, make two masters; the 300 s dark and flat are ignored."""
    config = config_file(tmp_path)
    incoming = tmp_path / "incoming"
    with running_service(config) as service:
        for i in range(3):
            for speed in ("FAST", "SLOW"):
                seed = i * 2 + (speed == "SLOW")
                put(incoming, f"b{seed}.fits", seed, OBSTYPE="DARK", EXPTIME=0, CCDSPEED=speed)
        put(incoming, "dark.fits", 10, OBSTYPE="DARK", EXPTIME=300.0, CCDSPEED="FAST")
        put(incoming, "flat.fits", 11, OBSTYPE="FLAT", EXPTIME=0, CCDSPEED="FAST")
        service.wait_event("master.published", count=2)
        assert service.stop()[0] == 0
    labels = {"48x40-2x1-CCDSPEED_FAST", "48x40-2x1-CCDSPEED_SLOW"}
    masters = catalog_rows(config, "SELECT geometry, path, ncombine FROM masters")
    assert {m["geometry"] for m in masters} == labels
    for master in masters:
        assert master["ncombine"] == 3
        assert fits.getheader(master["path"])["BWGEOM"] == master["geometry"]
        assert f"_{NIGHT}_" in Path(master["path"]).name
    frames = {
        Path(r["path"]).name: r
        for r in catalog_rows(config, "SELECT path, status, reason, night, note FROM frames")
    }
    assert {n: frames[n]["status"] for n in ("dark.fits", "flat.fits")} == {
        "dark.fits": "ignored",
        "flat.fits": "ignored",
    }
    assert frames["dark.fits"]["reason"] == "EXPTIME = 300.0 is not a bias (bias_when wants 0)"
    assert frames["flat.fits"]["reason"] == (
        "OBSTYPE = 'FLAT' is not a bias (bias_when wants \"dark\")"
    )
    biases = [r for n, r in frames.items() if n.startswith("b")]
    assert len(biases) == 6
    assert {(r["status"], r["night"], r["note"]) for r in biases} == {("combined", NIGHT, None)}
