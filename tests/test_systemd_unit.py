"""The production systemd unit (systemd/biaswatch.service) and its example config.

systemd is not PID 1 here, so the unit cannot be started; these tests check
what ``systemd-analyze`` can prove offline (the unit loads cleanly and its
sandbox rates SAFE) and that the unit and systemd/config.toml agree.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from biaswatch.config import load_config

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "biaswatch.service"
CONFIG = ROOT / "systemd" / "config.toml"
PRODUCTION_EXEC = "/opt/biaswatch/venv/bin/biaswatch"
EX_CONFIG = 78

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not on PATH"
)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value in order (unit files may repeat keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def words(values: list[str]) -> list[str]:
    """All space-separated words of a list setting such as ReadOnlyPaths=."""
    return [word for value in values for word in value.split()]


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    """The shipped unit file, parsed into sections and repeated keys."""
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def current_command() -> list[str]:
    """The biaswatch command of the environment running the tests."""
    beside_python = Path(sys.executable).with_name("biaswatch")
    if beside_python.is_file():
        return [str(beside_python)]
    on_path = shutil.which("biaswatch")
    if on_path:
        return [on_path]
    return [sys.executable, "-m", "biaswatch"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze with a timeout, capturing text output."""
    return subprocess.run(
        args, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=60
    )


@needs_systemd_analyze
def test_verify_passes(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit silently once ExecStart's binary exists."""
    text = UNIT.read_text(encoding="utf-8")
    prefix = f"ExecStart={PRODUCTION_EXEC} "
    assert text.count(prefix) == 1
    replacement = f"ExecStart={shlex.join(current_command())} "
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(prefix, replacement), encoding="utf-8")

    result = run("systemd-analyze", "verify", str(copy))

    assert result.returncode == 0, result.stderr
    # verify prints nothing for a clean unit (it does not check that the
    # biaswatch user or the /data paths exist); any line about it is a finding.
    assert "biaswatch" not in result.stdout + result.stderr, result.stderr


@needs_systemd_analyze
def test_verify_rejects_missing_binary(tmp_path: Path) -> None:
    """verify fails on the production ExecStart here, so the test above checks a real condition."""
    if Path(PRODUCTION_EXEC).exists():
        pytest.skip(f"{PRODUCTION_EXEC} is installed on this machine")
    copy = tmp_path / UNIT.name
    shutil.copyfile(UNIT, copy)

    result = run("systemd-analyze", "verify", str(copy))

    assert result.returncode != 0
    assert f"Command {PRODUCTION_EXEC} is not executable" in result.stderr


@needs_systemd_analyze
def test_security_exposure_at_most_1() -> None:
    """systemd-analyze security --offline rates the unit's overall exposure 1.0 or less."""
    result = run("systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT))

    assert result.returncode == 0, result.stderr
    match = re.search(
        r"Overall exposure level for biaswatch\.service: (\d+(?:\.\d+)?) (\w+)", result.stdout
    )
    assert match, result.stdout
    assert float(match.group(1)) <= 1.0, result.stdout
    assert match.group(2) == "SAFE"
    # --threshold counts in tenths (0-100): exit status 0 means exposure <= 1.0.
    strict = run(
        "systemd-analyze", "security", "--offline=true", "--threshold=10", "--no-pager", str(UNIT)
    )
    assert strict.returncode == 0, strict.stdout


def test_notify_watchdog_and_restart_policy(unit: dict[str, dict[str, list[str]]]) -> None:
    """The unit is Type=notify with a watchdog and restarts on failure but not on exit 78."""
    service = unit["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] == ["120s"]
    assert service["Restart"] == ["on-failure"]
    assert str(EX_CONFIG) in words(service["RestartPreventExitStatus"])
    assert service["KillMode"] == ["mixed"]
    assert service["OOMPolicy"] == ["continue"]
    assert service["ExecStart"] == [f"{PRODUCTION_EXEC} run --config /etc/biaswatch/config.toml"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_runs_unprivileged_in_a_read_only_sandbox(unit: dict[str, dict[str, list[str]]]) -> None:
    """The unit runs as a non-root user on a strict read-only file system with explicit holes."""
    service = unit["Service"]
    assert service["User"] == ["biaswatch"]
    assert service["User"][-1] not in {"root", "0"}
    assert service["ProtectSystem"] == ["strict"]
    assert "/data/cameras" in words(service["ReadOnlyPaths"])
    assert "/data/masters" in words(service["ReadWritePaths"])
    assert service["StateDirectory"] == ["biaswatch"]
    assert service["PrivateNetwork"] == ["yes"]
    assert service["CapabilityBoundingSet"] == [""]


def test_every_setting_group_has_a_comment() -> None:
    """Every block of settings in the unit, except Description= and [Install], follows a comment."""
    previous = ""
    for number, line in enumerate(UNIT.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        is_setting = "=" in stripped and not stripped.startswith(("#", ";"))
        starts_block = previous == "" or previous.startswith("[")
        if is_setting and starts_block:
            key = stripped.partition("=")[0]
            assert key in {"Description", "WantedBy"}, f"line {number}: {key}= has no comment"
        previous = stripped


def test_example_config_loads_and_fits_the_sandbox(unit: dict[str, dict[str, list[str]]]) -> None:
    """systemd/config.toml is valid and writes only where the unit allows, logging to journald."""
    config = load_config(CONFIG)
    service = unit["Service"]

    assert config.log_path is None  # log_file = "-": stdout, i.e. journald
    state_dirs = {f"/var/lib/{name}" for name in words(service["StateDirectory"])}
    assert str(config.service.state_dir) in state_dirs
    assert str(config.service.masters_dir) in words(service["ReadWritePaths"])
    read_only = [PurePosixPath(p) for p in words(service["ReadOnlyPaths"])]
    mounts = words(unit["Unit"]["RequiresMountsFor"])
    for camera in config.cameras:
        for directory in camera.watch:
            assert any(PurePosixPath(directory).is_relative_to(p) for p in read_only), directory
            assert any(PurePosixPath(directory).is_relative_to(m) for m in mounts), directory
    assert str(config.service.masters_dir) in mounts
