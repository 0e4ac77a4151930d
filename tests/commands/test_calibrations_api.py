"""The Python API for reduction code (biaswatch.calibrations) on a catalog backfill made."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time

from biaswatch import calibrations
from biaswatch.calibrations import NoMasterFound, explain, master_for, masters, read_master
from biaswatch.discovery import NoConfig
from biaswatch.errors import ConfigError
from biaswatch.testing.fits import write_cryo_raw
from biaswatch.testing.helpers import run_cli, write_config

NIGHT = "2025-03-10"  # 03:00 UTC on the 11th is the evening of the 10th in Chicago
IN_NIGHT = "2025-03-11T04:00:00"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config whose catalog and masters ``backfill`` made from one archived night (read only)."""
    tree = tmp_path_factory.mktemp("api")
    config = write_config(tree, expected_frames=5, min_frames=3)
    archive = tree / "archive"
    archive.mkdir()
    for i in range(3):
        write_cryo_raw(archive / f"b{i}.fits", 100 + i, date_obs=f"2025-03-11T03:00:0{i}")
    run_cli("backfill", "--config", config, "--camera", "cryo", archive, check=True)
    return config


@pytest.fixture
def own(made: Path, tmp_path: Path) -> Path:
    """A copy of ``made``'s tree for a test that changes it (a verdict)."""
    shutil.copytree(made.parent, tmp_path / "tree", symlinks=True)
    config = tmp_path / "tree" / "config.toml"
    # Paths in the catalog are absolute: point them at the copy.
    database = sqlite3.connect(tmp_path / "tree" / "state" / "catalog.sqlite")
    database.execute(
        "UPDATE masters SET path = replace(path, ?, ?)", (str(made.parent), str(config.parent))
    )
    database.commit()
    database.close()
    return config


def test_master_for_returns_what_masters_for_prints(made: Path) -> None:
    """The API's master for a time in the night is the path ``masters --for`` prints."""
    path = master_for("cryo", IN_NIGHT, config=made)
    printed = run_cli(
        "masters", "--config", made, "--for", IN_NIGHT, "--camera", "cryo", check=True
    )
    assert printed.stdout.strip() == str(path)
    assert path.is_file() and path.parent.parent == made.parent / "masters" / "cryo"


def test_when_may_be_a_datetime_text_or_an_astropy_time(made: Path) -> None:
    """An aware datetime, a naive one (UTC), ISO text and an astropy Time choose the same master."""
    aware = dt.datetime(2025, 3, 11, 4, tzinfo=dt.UTC)
    chosen = {
        master_for("cryo", w, config=made)
        for w in (aware, aware.replace(tzinfo=None), IN_NIGHT, Time(IN_NIGHT, scale="utc"))
    }
    assert len(chosen) == 1


def test_masters_lists_records_filtered_by_camera_night_and_state(made: Path) -> None:
    """``masters`` gives typed records; filters narrow them; an unknown camera is an error."""
    (record,) = masters(config=made)
    assert (record.camera, record.night, record.state) == ("cryo", dt.date(2025, 3, 10), "accepted")
    assert record.ncombine == 3 and record.qc is not None and record.path.is_file()
    assert masters("cryo", NIGHT, config=made) == [record]
    assert masters("cryo", dt.date(2025, 3, 10), "accepted", config=made) == [record]
    assert masters("te", config=made) == [] and masters(state="rejected", config=made) == []
    with pytest.raises(ConfigError, match="nosuch"):
        masters("nosuch", config=made)


def test_a_rejected_master_is_never_returned(own: Path) -> None:
    """After ``biaswatch reject`` the API finds no master and names the verdict as the reason."""
    (record,) = masters(config=own)
    run_cli("reject", "--config", own, record.path, "--why", "light leak", check=True)
    with pytest.raises(NoMasterFound, match="no accepted master for camera cryo") as raised:
        master_for("cryo", IN_NIGHT, config=own)
    match = raised.value.match
    assert match is not None and match.chosen is None
    (decision,) = match.decisions
    assert (decision.outcome, decision.reason) == ("rejected", "verdict: rejected")
    (rejected,) = masters(state="rejected", config=own)
    assert rejected.judgement == "light leak"


def test_a_master_older_than_max_age_is_refused_and_the_age_said(made: Path) -> None:
    """Sixty days on, no master fits the default 30 days; the error says its age; max_age widens."""
    later = "2025-05-10T04:00:00"
    with pytest.raises(NoMasterFound, match=r"is 60\.\d days older than .*max_age_days = 30"):
        master_for("cryo", later, config=made)
    assert explain("cryo", later, config=made).decisions[0].outcome == "too_old"
    assert master_for("cryo", later, max_age=61, config=made).is_file()
    assert master_for("cryo", later, max_age=dt.timedelta(days=61), config=made).is_file()


def test_like_a_frame_path_matches_its_configuration_and_dates_it(
    made: Path, tmp_path: Path
) -> None:
    """A frame of the same layout finds the master with no time given: DATE-OBS dates it."""
    science = write_cryo_raw(
        tmp_path / "sci.fits", 7, kind="OBJECT", date_obs="2025-03-11T05:00:00"
    )
    assert master_for("cryo", like=science, config=made) == master_for(
        "cryo", IN_NIGHT, config=made
    )


def test_like_a_header_of_another_binning_is_another_configuration(made: Path) -> None:
    """A header binned 2 x 2 finds no master, each candidate refused as another configuration."""
    header = fits.Header({"NAXIS": 2, "NAXIS1": 28, "NAXIS2": 20, "CCDSUM": "2 2"})
    header["DATE-OBS"] = "2025-03-11T05:00:00"
    header["BIASSEC"], header["TRIMSEC"] = "[25:28,1:20]", "[1:24,1:20]"
    match = explain("cryo", like=header, config=made)
    assert match.chosen is None
    assert [d.outcome for d in match.decisions] == ["other_configuration"]
    assert "the frame's is" in match.decisions[0].reason


def test_like_without_a_date_asks_for_when(made: Path) -> None:
    """A header with no date keyword and no ``when`` is a ValueError that says to pass ``when``."""
    header = fits.Header({"NAXIS": 2, "NAXIS1": 56, "NAXIS2": 40})
    with pytest.raises(ValueError, match="pass when="):
        master_for("cryo", like=header, config=made)


def test_read_master_gives_ccddata_with_mask_and_uncertainty(made: Path) -> None:
    """The chosen master reads as CCDData in ADU with the file's pixels, mask and uncertainty."""
    path = master_for("cryo", IN_NIGHT, config=made)
    bias = read_master(path)
    assert str(bias.unit) == "adu"
    np.testing.assert_array_equal(bias.data, fits.getdata(path, 0))
    np.testing.assert_array_equal(bias.mask, fits.getdata(path, "MASK").astype(bool))
    np.testing.assert_array_equal(bias.uncertainty.array, fits.getdata(path, "UNCERT"))
    assert read_master(masters(config=made)[0]).shape == bias.shape


def test_the_config_is_discovered_from_the_environment(
    made: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no ``config=``, $BIASWATCH_CONFIG names the file; a missing one is a NoConfig."""
    monkeypatch.setenv("BIASWATCH_CONFIG", str(made))
    assert master_for("cryo", IN_NIGHT) == master_for("cryo", IN_NIGHT, config=made)
    monkeypatch.setenv("BIASWATCH_CONFIG", str(made.parent / "absent.toml"))
    with pytest.raises(NoConfig, match=r"absent\.toml \(from \$BIASWATCH_CONFIG\)"):
        masters()


def test_a_newer_catalog_is_refused_with_both_versions(own: Path) -> None:
    """A catalog whose schema version is above this code's is refused, naming both versions."""
    database = sqlite3.connect(own.parent / "state" / "catalog.sqlite")
    database.execute("PRAGMA user_version = 99")
    database.commit()
    database.close()
    with pytest.raises(ConfigError, match=r"catalog schema 99 is newer than this biaswatch"):
        masters(config=own)


def test_the_api_module_is_documented_and_exports_what_it_names() -> None:
    """Every name in ``__all__`` exists and has a docstring (the README points readers here)."""
    for name in calibrations.__all__:
        assert getattr(calibrations, name).__doc__, name
