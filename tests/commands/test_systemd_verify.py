"""The systemd units checked offline by systemd-analyze verify and security (a subprocess each)."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from systemd_units import (
    DASK_UNITS,
    NETWORK_AND_PROC_FINDINGS,
    PRODUCTION_DASK,
    PRODUCTION_EXEC,
    UNIT,
    current_command,
    current_dask,
    needs_systemd_analyze,
    run,
    security_findings,
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


@needs_systemd_analyze
@pytest.mark.parametrize("path", DASK_UNITS, ids=lambda path: path.name)
def test_dask_unit_verify_passes(tmp_path: Path, path: Path) -> None:
    """systemd-analyze verify accepts a Dask unit silently once ExecStart's dask exists."""
    text = path.read_text(encoding="utf-8")
    prefix = f"ExecStart={PRODUCTION_DASK} "
    assert text.count(prefix) == 1
    copy = tmp_path / path.name
    copy.write_text(text.replace(prefix, f"ExecStart={shlex.join(current_dask())} "), "utf-8")

    result = run("systemd-analyze", "verify", str(copy))

    assert result.returncode == 0, result.stderr
    assert path.stem not in result.stdout + result.stderr, result.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("path", DASK_UNITS, ids=lambda path: path.name)
def test_dask_unit_verify_rejects_missing_binary(tmp_path: Path, path: Path) -> None:
    """verify fails on the production dask path here, so the test above checks a real condition."""
    if Path(PRODUCTION_DASK).exists():
        pytest.skip(f"{PRODUCTION_DASK} is installed on this machine")
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)

    result = run("systemd-analyze", "verify", str(copy))

    assert result.returncode != 0
    assert f"Command {PRODUCTION_DASK} is not executable" in result.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("path", DASK_UNITS, ids=lambda path: path.name)
def test_dask_unit_sandbox_gives_up_only_network_and_proc(path: Path) -> None:
    """A Dask unit's exposures beyond biaswatch.service's are network and /proc ones; <= 1.2."""
    extra = security_findings(path) - security_findings(UNIT)

    assert extra <= NETWORK_AND_PROC_FINDINGS, extra
    # --threshold counts in tenths: exit status 0 means exposure <= 1.2 ("OK").
    result = run(
        "systemd-analyze", "security", "--offline=true", "--threshold=12", "--no-pager", str(path)
    )
    assert result.returncode == 0, result.stdout
    assert re.search(rf"Overall exposure level for {re.escape(path.name)}: ", result.stdout)


NOTIFY_DROP_IN = UNIT.parent / "biaswatch.service.d" / "notify-url.conf.example"


@needs_systemd_analyze
def test_notify_url_drop_in_opens_only_the_network_and_verifies(tmp_path: Path) -> None:
    """With the notify-url drop-in, verify is clean and only the network findings are added."""
    text = UNIT.read_text(encoding="utf-8")
    replacement = f"ExecStart={shlex.join(current_command())} "
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={PRODUCTION_EXEC} ", replacement), encoding="utf-8")
    drop_in = tmp_path / f"{UNIT.name}.d" / "notify-url.conf"
    drop_in.parent.mkdir()
    shutil.copyfile(NOTIFY_DROP_IN, drop_in)

    result = run("systemd-analyze", "verify", str(copy))

    assert result.returncode == 0, result.stderr
    assert "biaswatch" not in result.stdout + result.stderr, result.stderr
    # security --offline reads the drop-in beside the copy: the host's network, IP sockets
    # and an allow list are the only new exposures (no /proc one, unlike the Dask units).
    extra = security_findings(copy) - security_findings(UNIT)
    assert extra == NETWORK_AND_PROC_FINDINGS - {"ProcSubset="}, extra
    settings = [
        line for line in drop_in.read_text(encoding="utf-8").splitlines() if "=" in line[:40]
    ]
    assert [s for s in settings if not s.startswith("#")] == [
        "PrivateNetwork=no",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "IPAddressAllow=192.0.2.10",
    ]
