"""The systemd units checked offline by systemd-analyze verify and security (a subprocess each)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
from pathlib import Path, PurePosixPath

import pytest
from systemd_units import (
    CONFIG,
    DASK_UNITS,
    NETWORK_AND_PROC_FINDINGS,
    PRODUCTION_DASK,
    PRODUCTION_EXEC,
    UNIT,
    current_command,
    current_dask,
    needs_systemd_analyze,
    parse_unit,
    run,
    security_findings,
)

from biaswatch.config import load_config

SYSUSERS = UNIT.parent / "biaswatch.sysusers"
TMPFILES = UNIT.parent / "biaswatch.tmpfiles"
# prometheus-node-exporter's --collector.textfile.directory default on Debian 12
# (`prometheus-node-exporter --help`, 1.5.0-1+b6; its README.textfile).
DEBIAN_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


def runnable_copy(directory: Path) -> Path:
    """biaswatch.service in ``directory``, its ExecStart= and ExecReload= running our biaswatch."""
    text = UNIT.read_text(encoding="utf-8")
    for key in ("ExecStart", "ExecReload"):
        assert text.count(f"{key}={PRODUCTION_EXEC} ") == 1, key
    copy = directory / UNIT.name
    copy.write_text(text.replace(PRODUCTION_EXEC, shlex.join(current_command())), "utf-8")
    return copy


@needs_systemd_analyze
def test_verify_passes(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit silently once ExecStart's binary exists."""
    copy = runnable_copy(tmp_path)

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
def test_security_exposure_at_most_0_3() -> None:
    """systemd-analyze security --offline rates the unit's exposure 0.3 or less (issue 16)."""
    result = run("systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT))

    assert result.returncode == 0, result.stderr
    match = re.search(
        r"Overall exposure level for biaswatch\.service: (\d+(?:\.\d+)?) (\w+)", result.stdout
    )
    assert match, result.stdout
    assert float(match.group(1)) <= 0.3, result.stdout
    assert match.group(2) == "SAFE"
    # --threshold counts in tenths (0-100): exit status 0 means exposure <= 0.3.
    strict = run(
        "systemd-analyze", "security", "--offline=true", "--threshold=3", "--no-pager", str(UNIT)
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


def verified_with_drop_in(tmp_path: Path, example: Path) -> tuple[Path, Path]:
    """A runnable copy of the unit with ``example`` as its drop-in; verify must be clean."""
    copy = runnable_copy(tmp_path)
    drop_in = tmp_path / f"{UNIT.name}.d" / example.name.removesuffix(".example")
    drop_in.parent.mkdir()
    shutil.copyfile(example, drop_in)
    result = run("systemd-analyze", "verify", str(copy))
    assert result.returncode == 0, result.stderr
    assert "biaswatch" not in result.stdout + result.stderr, result.stderr
    return copy, drop_in


NOTIFY_DROP_IN = UNIT.parent / "biaswatch.service.d" / "notify-url.conf.example"


@needs_systemd_analyze
def test_notify_url_drop_in_opens_only_the_network_and_verifies(tmp_path: Path) -> None:
    """With the notify-url drop-in, verify is clean and only the network findings are added."""
    copy, drop_in = verified_with_drop_in(tmp_path, NOTIFY_DROP_IN)
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


METRICS_DROP_IN = UNIT.parent / "biaswatch.service.d" / "metrics.conf.example"


@needs_systemd_analyze
def test_metrics_drop_in_adds_one_writable_directory_and_verifies(tmp_path: Path) -> None:
    """With the metrics drop-in, verify is clean, no exposure is added, its config line loads."""
    copy, drop_in = verified_with_drop_in(tmp_path, METRICS_DROP_IN)
    text = drop_in.read_text(encoding="utf-8")
    assert security_findings(copy) == security_findings(UNIT)
    settings = [line for line in text.splitlines() if line and not line.startswith(("#", "["))]
    assert settings == [f"ReadWritePaths={DEBIAN_TEXTFILE_DIR}"]
    # The [service] lines its comment shows, added to the example config, load and name
    # a .prom file in that directory.
    shown = [line[1:].strip() for line in text.splitlines() if line.startswith("#   ")]
    table, setting = shown[shown.index("[service]") :][:2]
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.read_text(encoding="utf-8").replace(table, f"{table}\n{setting}", 1), "utf-8"
    )
    metrics_file = load_config(config).service.metrics_file
    assert metrics_file is not None
    assert str(PurePosixPath(metrics_file).parent) == DEBIAN_TEXTFILE_DIR


def without_comments(path: Path) -> list[str]:
    """The lines of a sysusers.d or tmpfiles.d file that are not comments or blank."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


needs_root_and_tools = pytest.mark.skipif(
    os.geteuid() != 0
    or not shutil.which("systemd-sysusers")
    or not shutil.which("systemd-tmpfiles"),
    reason="needs root, systemd-sysusers and systemd-tmpfiles",
)


@needs_root_and_tools
def test_sysusers_creates_the_system_user_whose_home_is_the_state_directory(
    tmp_path: Path,
) -> None:
    """systemd-sysusers --root makes user and group biaswatch: system uid, nologin, state home."""
    (tmp_path / "etc").mkdir()

    result = run("systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS.resolve()))

    assert result.returncode == 0, result.stderr
    passwd = [line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()]
    (user,) = [entry for entry in passwd if entry[0] == "biaswatch"]
    name, _, uid, gid, _, home, shell = user
    assert home == "/var/lib/biaswatch" and shell.endswith("/nologin")
    assert int(uid) < 1000  # SYS_UID_MAX of Debian's login.defs: a system user
    groups = (tmp_path / "etc" / "group").read_text().splitlines()
    assert f"biaswatch:x:{gid}:" in groups
    unit = parse_unit(UNIT.read_text(encoding="utf-8"))["Service"]
    assert unit["User"] == [name] and unit["Group"] == [name]
    assert home == f"/var/lib/{unit['StateDirectory'][0]}"


@needs_root_and_tools
def test_tmpfiles_creates_the_masters_directory_for_the_service_only(tmp_path: Path) -> None:
    """systemd-tmpfiles --root makes /data/masters 0750 biaswatch:biaswatch and /etc/biaswatch."""
    (tmp_path / "etc").mkdir()
    made = run("systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS.resolve()))
    assert made.returncode == 0, made.stderr
    uid = next(
        int(line.split(":")[2])
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
        if line.startswith("biaswatch:")
    )

    result = run("systemd-tmpfiles", f"--root={tmp_path}", "--create", str(TMPFILES.resolve()))

    assert result.returncode == 0, result.stderr
    masters = (tmp_path / "data" / "masters").stat()
    assert (stat.S_IMODE(masters.st_mode), masters.st_uid, masters.st_gid) == (0o750, uid, uid)
    etc = (tmp_path / "etc" / "biaswatch").stat()
    assert (stat.S_IMODE(etc.st_mode), etc.st_uid, etc.st_gid) == (0o755, 0, 0)
    config = load_config(CONFIG)
    service = parse_unit(UNIT.read_text(encoding="utf-8"))["Service"]
    assert str(config.service.masters_dir) == "/data/masters"
    assert "/data/masters" in " ".join(service["ReadWritePaths"])
    # What the unit creates itself is not in the file.
    assert not any(
        "/var/lib/biaswatch" in line or "/run/" in line for line in without_comments(TMPFILES)
    )
