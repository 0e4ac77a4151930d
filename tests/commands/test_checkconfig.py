"""``biaswatch check-config`` as an operator runs it: a subprocess on a config file."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from biaswatch.config import load_config
from biaswatch.testing.helpers import run_cli


def check(config: Path) -> subprocess.CompletedProcess[str]:
    """Run ``biaswatch check-config`` on ``config``."""
    return run_cli("check-config", "--config", config)


def test_valid_config_prints_settings_that_load_back_the_same(tmp_path: Path) -> None:
    """Exit 0, and the printed TOML is the same configuration, every default written out."""
    (tmp_path / "in").mkdir()
    config = tmp_path / "config.toml"
    config.write_text(
        textwrap.dedent(
            """
            [defaults]
            expected_frames = 7
            [defaults.qc]
            ccd_temp_setpoint = -100
            [cameras.cryo]
            watch = ["in"]
            [cameras.cryo.calibrate]
            trim = "[1:48,1:40]"
            """
        )
    )
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert f"# {tmp_path / 'in'}: ok, local disk" in result.stdout
    printed = tmp_path / "printed.toml"
    printed.write_text(result.stdout)
    original, again = load_config(config), load_config(printed)
    assert again.cameras == original.cameras
    assert (again.service, again.site) == (original.service, original.site)
    assert (again.alerts, again.notify) == (original.alerts, original.notify)
    alerts = (
        "[alerts]\ncommand = []\n# url is unset\ntimeout_seconds = 30.0\nmax_output_bytes = 4096\n"
    )
    assert alerts in result.stdout
    notify = "[notify]\ncommand = []\n# url is unset\ntimeout_seconds = 10.0\nmax_tries = 8\n"
    assert notify + "retry_seconds = 5.0\n" in result.stdout
    assert "max_running = 2\nmax_queued = 100\n" in result.stdout
    assert again.camera("cryo").expected_frames == 7
    assert again.camera("cryo").qc.ccd_temp_setpoint == -100


def test_invalid_config_exits_78_listing_every_problem(tmp_path: Path) -> None:
    """Two mistakes give exit status 78 and both problems on stderr, nothing on stdout."""
    config = tmp_path / "config.toml"
    config.write_text(
        textwrap.dedent(
            """
            [cameras.cryo]
            watch = ["in"]
            expected_frames = 0
            [cameras.cryo.combine]
            signma_clip = true
            """
        )
    )
    result = check(config)
    assert result.returncode == 78
    assert result.stdout == ""
    assert "2 problem(s)" in result.stderr
    assert "[cameras.cryo] expected_frames" in result.stderr
    assert "signma_clip" in result.stderr and "sigma_clip" in result.stderr


def test_overlapping_directories_are_config_errors_naming_both_paths(tmp_path: Path) -> None:
    """A masters_dir reaching a watched tree through '..' fails check-config with both paths."""
    config = tmp_path / "config.toml"
    config.write_text('[service]\nmasters_dir = "x/../in/m"\n[cameras.cryo]\nwatch = ["in"]\n')
    result = check(config)
    assert result.returncode == 78
    assert result.stdout == ""
    assert (
        f'[service] masters_dir: "{tmp_path}/x/../in/m" (resolved: "{tmp_path}/in/m") is '
        f'inside camera cryo\'s watched directory "{tmp_path}/in"'
    ) in result.stderr


def test_bias_when_date_keywords_and_group_by_are_printed_with_their_meaning(
    tmp_path: Path,
) -> None:
    """The new keys print as TOML that loads back the same, each after a line saying its effect."""
    (tmp_path / "in").mkdir()
    config = tmp_path / "config.toml"
    config.write_text(
        textwrap.dedent(
            """
            [cameras.spectro]
            watch = ["in"]
            bias_when = { OBJECT = "Bias", ELAPTIME = 0, "HIERARCH ESO DPR TYPE" = ["BIAS", 1] }
            date_keywords = ["MJD-OBS", "DATE-OBS"]
            group_by = ["CCDSPEED", "CCDGAIN"]
            """
        )
    )
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert (
        '# a frame is a bias when OBJECT is "bias" and ELAPTIME is 0 and ESO DPR TYPE is any '
        'of ["bias", 1]; others are ignored\n'
        'bias_when = { OBJECT = "bias", ELAPTIME = 0, "ESO DPR TYPE" = ["bias", 1] }\n'
    ) in result.stdout
    assert (
        "# dated by the first of MJD-OBS, DATE-OBS (a date alone takes its time from TIME-OBS, "
        "UTC, UT) that reads, TIMESYS honoured; else the file's mtime\n"
        'date_keywords = ["MJD-OBS", "DATE-OBS"]\n'
    ) in result.stdout
    assert (
        "# sets split by night, image layout, binning (CCDSUM, XBINNING/YBINNING, BINNING), "
        'CCDSPEED, CCDGAIN\ngroup_by = ["CCDSPEED", "CCDGAIN"]\n'
    ) in result.stdout
    printed = tmp_path / "printed.toml"
    printed.write_text(result.stdout)
    assert load_config(printed).cameras == load_config(config).cameras


def test_unset_bias_when_says_which_keyword_decides(tmp_path: Path) -> None:
    """Without bias_when, check-config says the IMAGETYP rule decides, with its values."""
    (tmp_path / "in").mkdir()
    config = tmp_path / "config.toml"
    config.write_text('[cameras.cryo]\nwatch = ["in"]\nbias_values = ["Zero"]\n')
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert '# bias_when is unset: a frame is a bias when IMAGETYP is one of "zero"\n' in (
        result.stdout
    )
