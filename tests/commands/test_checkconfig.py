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
    assert again.alerts == original.alerts
    assert "[alerts]\ncommand = []\ntimeout_seconds = 30.0\nmax_output_bytes = 4096\n" in (
        result.stdout
    )
    assert "max_running = 2\nmax_queued = 100\n" in result.stdout
    assert again.camera("cryo").expected_frames == 7
    assert again.camera("cryo").qc.ccd_temp_setpoint == -100


def test_invalid_config_exits_2_listing_every_problem(tmp_path: Path) -> None:
    """Two mistakes give exit status 2 and both problems on stderr, nothing on stdout."""
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
    assert result.returncode == 2
    assert result.stdout == ""
    assert "2 problem(s)" in result.stderr
    assert "[cameras.cryo] expected_frames" in result.stderr
    assert "signma_clip" in result.stderr and "sigma_clip" in result.stderr


def test_overlapping_directories_are_config_errors_naming_both_paths(tmp_path: Path) -> None:
    """A masters_dir reaching a watched tree through '..' fails check-config with both paths."""
    config = tmp_path / "config.toml"
    config.write_text('[service]\nmasters_dir = "x/../in/m"\n[cameras.cryo]\nwatch = ["in"]\n')
    result = check(config)
    assert result.returncode == 2
    assert result.stdout == ""
    assert (
        f'[service] masters_dir: "{tmp_path}/x/../in/m" (resolved: "{tmp_path}/in/m") is '
        f'inside camera cryo\'s watched directory "{tmp_path}/in"'
    ) in result.stderr
