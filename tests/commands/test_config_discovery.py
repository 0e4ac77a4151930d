"""Config discovery: --config, else $BIASWATCH_CONFIG, else /etc/biaswatch/config.toml, else ./."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from biaswatch.cli.common import SYSTEM_CONFIG, config_path
from biaswatch.rules.monitoring import CRITICAL
from biaswatch.testing.fits import make_bias_fits

MINIMAL = """
[cameras.cryo]
watch = ["incoming/cryo"]
"""

# A key the validator refuses, so the error must name the file it came from.
BROKEN = "[defaults]\nquiet_minuts = 5\n" + MINIMAL


def cli(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m biaswatch ARGS`` run in ``cwd`` with $BIASWATCH_CONFIG only as ``env`` says."""
    environ = {k: v for k, v in os.environ.items() if k != "BIASWATCH_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "biaswatch", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=cwd,
        env={**environ, **(env or {})},
    )


def given(config: Path | None) -> argparse.Namespace:
    """The parsed options of a command given ``--config`` (or not)."""
    return argparse.Namespace(config=config)


def test_config_option_wins_over_environment_and_system(tmp_path: Path) -> None:
    """--config is used even when $BIASWATCH_CONFIG is set and the system config exists."""
    system = tmp_path / "etc.toml"
    system.write_text(MINIMAL)
    chosen = config_path(given(Path("mine.toml")), {"BIASWATCH_CONFIG": "env.toml"}, system)
    assert chosen == (Path("mine.toml"), "--config")


def test_environment_wins_over_system(tmp_path: Path) -> None:
    """$BIASWATCH_CONFIG is used before an existing system config."""
    system = tmp_path / "etc.toml"
    system.write_text(MINIMAL)
    chosen = config_path(given(None), {"BIASWATCH_CONFIG": "env.toml"}, system)
    assert chosen == (Path("env.toml"), "$BIASWATCH_CONFIG")


def test_system_config_when_it_exists(tmp_path: Path) -> None:
    """With neither --config nor $BIASWATCH_CONFIG (empty counts as unset), the system config."""
    system = tmp_path / "etc.toml"
    system.write_text(MINIMAL)
    assert config_path(given(None), {"BIASWATCH_CONFIG": ""}, system) == (system, str(system))


def test_working_directory_config_last(tmp_path: Path) -> None:
    """With no system config either, ./config.toml is the choice."""
    chosen = config_path(given(None), {}, tmp_path / "absent.toml")
    assert chosen == (Path("config.toml"), "./config.toml")


def test_default_system_path_is_etc() -> None:
    """The system config looked for is the installed service's /etc/biaswatch/config.toml."""
    assert Path("/etc/biaswatch/config.toml") == SYSTEM_CONFIG


def test_environment_config_used_and_told(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    """status reads $BIASWATCH_CONFIG's file and, with --verbose, says so on stderr."""
    path = write_config(MINIMAL, "elsewhere.toml")
    result = cli("status", "--verbose", cwd=tmp_path, env={"BIASWATCH_CONFIG": str(path)})
    assert result.returncode == CRITICAL, result.stderr  # read it; no service runs
    assert f"biaswatch: using config {path} (from $BIASWATCH_CONFIG)" in result.stderr
    assert "camera cryo" in result.stdout


@pytest.mark.skipif(SYSTEM_CONFIG.exists(), reason="a system config here would be chosen first")
def test_working_directory_config_used(tmp_path: Path, write_config: Callable[[str], Path]) -> None:
    """Without --config, $BIASWATCH_CONFIG or a system config, ./config.toml is read."""
    path = write_config(MINIMAL)
    result = cli("status", "-v", cwd=tmp_path)
    assert result.returncode == CRITICAL, result.stderr  # read it; no service runs
    assert f"biaswatch: using config {path} (from ./config.toml" in result.stderr


def test_config_option_overrides_environment(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    """--config is read although $BIASWATCH_CONFIG names a broken file."""
    broken = write_config(BROKEN, "broken.toml")
    good = write_config(MINIMAL, "good.toml")
    env = {"BIASWATCH_CONFIG": str(broken)}
    result = cli("status", "--config", good, "-v", cwd=tmp_path, env=env)
    assert result.returncode == CRITICAL, result.stderr  # read it; no service runs
    assert f"using config {good} (from --config)" in result.stderr


def test_missing_environment_config_named(tmp_path: Path) -> None:
    """A $BIASWATCH_CONFIG naming no file exits 78 saying which file and why it was chosen."""
    missing = tmp_path / "nowhere.toml"
    result = cli("masters", cwd=tmp_path, env={"BIASWATCH_CONFIG": str(missing)})
    assert result.returncode == 78
    assert f"biaswatch: no config at {missing} (from $BIASWATCH_CONFIG)" in result.stderr


@pytest.mark.skipif(SYSTEM_CONFIG.exists(), reason="a system config here would be chosen first")
def test_missing_default_config_says_what_was_tried(tmp_path: Path) -> None:
    """No config anywhere: the error names ./config.toml and every place not given."""
    result = cli("log", cwd=tmp_path)
    assert result.returncode == 78
    assert f"no config at {tmp_path / 'config.toml'} (from ./config.toml: no --config, " in (
        result.stderr
    )
    assert "$BIASWATCH_CONFIG unset, no /etc/biaswatch/config.toml" in result.stderr


def test_load_error_names_the_file_and_its_source(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    """A broken config found via $BIASWATCH_CONFIG: exit 78, the file and its source named."""
    broken = write_config(BROKEN, "broken.toml")
    result = cli("status", cwd=tmp_path, env={"BIASWATCH_CONFIG": str(broken)})
    assert result.returncode == 78
    assert f"configuration error in {broken} (from $BIASWATCH_CONFIG):" in result.stderr
    assert "quiet_minuts: unknown key" in result.stderr


def test_check_config_names_the_file_and_its_source(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    """check-config on a discovered broken config exits 78 naming the file and its source."""
    broken = write_config(BROKEN, "broken.toml")
    result = cli("check-config", cwd=tmp_path, env={"BIASWATCH_CONFIG": str(broken)})
    assert result.returncode == 78
    assert f"{broken} (from $BIASWATCH_CONFIG): 1 problem(s)" in result.stderr


def test_check_config_missing_file_exits_78(tmp_path: Path) -> None:
    """check-config given a file that is not there exits 78 (EX_CONFIG, as all), naming it."""
    missing = tmp_path / "nowhere.toml"
    result = cli("check-config", "--config", missing, cwd=tmp_path)
    assert result.returncode == 78
    assert f"biaswatch: no config at {missing} (from --config)" in result.stderr


@pytest.mark.skipif(SYSTEM_CONFIG.exists(), reason="a system config here would be chosen first")
def test_combine_ignores_working_directory_config(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    """combine with no config given keeps built-in defaults, even beside a ./config.toml."""
    write_config(BROKEN)  # read, it would fail: proof it is not
    raws = [make_bias_fits(tmp_path / f"raw{i}.fits", seed=i) for i in range(3)]
    out = tmp_path / "master.fits"
    result = cli("combine", "-v", "-o", out, *raws, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "biaswatch: using built-in defaults (from built-in defaults: no --config" in (
        result.stderr
    )
    assert out.is_file()


def test_combine_reads_environment_config(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    """combine reads $BIASWATCH_CONFIG when set, so its errors surface (exit 78, file named)."""
    broken = write_config(BROKEN, "broken.toml")
    raws = [make_bias_fits(tmp_path / f"raw{i}.fits", seed=i) for i in range(3)]
    env = {"BIASWATCH_CONFIG": str(broken)}
    result = cli("combine", "-o", tmp_path / "m.fits", *raws, cwd=tmp_path, env=env)
    assert result.returncode == 78
    assert f"configuration error in {broken} (from $BIASWATCH_CONFIG):" in result.stderr


@pytest.mark.skipif(SYSTEM_CONFIG.exists(), reason="a system config here would be chosen first")
def test_combine_camera_without_any_config(tmp_path: Path) -> None:
    """combine --camera with no config to be found exits 78 naming the ways to give one."""
    raws = [make_bias_fits(tmp_path / f"raw{i}.fits", seed=i) for i in range(3)]
    result = cli("combine", "--camera", "cryo", "-o", tmp_path / "m.fits", *raws, cwd=tmp_path)
    assert result.returncode == 78
    assert "--camera needs a config: --config, $BIASWATCH_CONFIG or /etc/biaswatch/co" in (
        result.stderr
    )
