"""The production systemd units (systemd/*.service) and the example config, as text.

systemd is not PID 1 here, so the units cannot be started; these tests check that the
units and systemd/config.toml agree. What ``systemd-analyze`` proves offline is in
tests/commands/test_systemd_verify.py; the Dask units' commands run as written, outside
systemd, in tests/service/test_systemd_cluster.py.
"""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath

import pytest
from systemd_units import (
    CONFIG,
    DASK_UNITS,
    EX_CONFIG,
    PRODUCTION_DASK,
    PRODUCTION_EXEC,
    SCHEDULER_UNIT,
    UNIT,
    WORKER_BASELINE_BYTES,
    WORKER_ENV_FILE,
    WORKER_UNIT,
    assert_every_setting_group_has_a_comment,
    environment,
    option,
    parse_unit,
    words,
)

from biaswatch.cli.main import build_parser
from biaswatch.config import load_config


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    """The shipped unit file, parsed into sections and repeated keys."""
    return parse_unit(UNIT.read_text(encoding="utf-8"))


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


def test_reload_waits_for_the_services_answer(unit: dict[str, dict[str, list[str]]]) -> None:
    """ExecReload= is `biaswatch reload --pid $MAINPID` on the unit's config, not a bare kill."""
    service = unit["Service"]
    (reload,) = service["ExecReload"]
    command = shlex.split(reload)
    assert command[0] == PRODUCTION_EXEC
    args = build_parser().parse_args([*command[1:-1], "4242"])  # systemd puts MAINPID there
    assert command[-2:] == ["--pid", "$MAINPID"]
    assert (args.command, args.pid) == ("reload", 4242)
    assert str(args.config) == shlex.split(service["ExecStart"][0])[-1]
    # A reload that waits must end before systemd kills it (TimeoutStartSec=, default 90 s).
    assert "TimeoutStartSec" not in service and args.timeout < 90
    assert service["Type"] == ["notify"]  # not notify-reload: systemd 252 lacks it


def test_runtime_and_cache_directories_are_the_units_own(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    """/run/biaswatch holds the pidfile; matplotlib and XDG caches go to /var/cache/biaswatch."""
    service = unit["Service"]
    assert service["RuntimeDirectory"] == ["biaswatch"]
    assert service["RuntimeDirectoryMode"] == ["0750"]
    assert "PIDFile" not in service  # Type=notify: systemd knows the main pid
    assert service["CacheDirectory"] == ["biaswatch"]
    assert service["CacheDirectoryMode"] == ["0750"]
    env = environment(service["Environment"])
    assert env["MPLCONFIGDIR"] == "%C/biaswatch/matplotlib"
    assert env["XDG_CACHE_HOME"] == "%C/biaswatch"


def test_no_memory_is_writable_and_executable(unit: dict[str, dict[str, list[str]]]) -> None:
    """MemoryDenyWriteExecute=yes: the combine kernel is compiled at install, not at run time."""
    assert unit["Service"]["MemoryDenyWriteExecute"] == ["yes"]


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
    assert_every_setting_group_has_a_comment(UNIT)


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


# The Dask units (systemd/biaswatch-dask-*.service): executor = "dask".


@pytest.fixture(scope="module")
def scheduler_unit() -> dict[str, dict[str, list[str]]]:
    """The shipped scheduler unit, parsed."""
    return parse_unit(SCHEDULER_UNIT.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def worker_unit() -> dict[str, dict[str, list[str]]]:
    """The shipped worker unit, parsed."""
    return parse_unit(WORKER_UNIT.read_text(encoding="utf-8"))


def test_scheduler_runs_dask_scheduler_from_the_venv(
    scheduler_unit: dict[str, dict[str, list[str]]], unit: dict[str, dict[str, list[str]]]
) -> None:
    """The scheduler unit runs the venv's dask scheduler on 8786/8787, restarting always."""
    service = scheduler_unit["Service"]
    assert service["ExecStart"] == [
        f"{PRODUCTION_DASK} scheduler --port 8786 --dashboard-address :8787"
    ]
    venv_bin = PurePosixPath(unit["Service"]["ExecStart"][0].split()[0]).parent
    assert PurePosixPath(service["ExecStart"][0].split()[0]).parent == venv_bin
    assert service["Restart"] == ["always"]
    assert service["User"] == unit["Service"]["User"]
    assert service["KillMode"] == ["mixed"]
    assert scheduler_unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_worker_runs_one_thread_per_process_with_a_memory_resource(
    worker_unit: dict[str, dict[str, list[str]]], unit: dict[str, dict[str, list[str]]]
) -> None:
    """The worker unit runs the venv's dask worker with --nthreads 1 and --resources MEMORY=."""
    service = worker_unit["Service"]
    assert len(service["ExecStart"]) == 1
    command = shlex.split(service["ExecStart"][0])
    assert command[:3] == [PRODUCTION_DASK, "worker", "${BIASWATCH_SCHEDULER}"]
    assert option(command, "--nthreads") == "1"
    assert option(command, "--nworkers") == "${BIASWATCH_NWORKERS}"
    assert option(command, "--resources") == "MEMORY=${BIASWATCH_MEMORY}"
    assert option(command, "--memory-limit") == "${BIASWATCH_MEMORY_LIMIT}"
    assert service["Restart"] == ["always"]
    # dask worker exits (status 0 or 1) whenever its scheduler is away: never give up.
    assert worker_unit["Unit"]["StartLimitIntervalSec"] == ["0"]
    # Required ("-" would make it optional), and it alone names the scheduler.
    assert service["EnvironmentFile"] == [WORKER_ENV_FILE]
    assert "BIASWATCH_SCHEDULER" not in environment(service["Environment"])
    assert service["User"] == unit["Service"]["User"]
    assert service["KillMode"] == ["mixed"]
    assert service["OOMPolicy"] == ["continue"]
    assert worker_unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_worker_defaults_fit_the_example_config(
    worker_unit: dict[str, dict[str, list[str]]],
) -> None:
    """The worker's MEMORY default covers config.toml's mem_limit and it sees the shared trees."""
    config = load_config(CONFIG)
    service = worker_unit["Service"]
    env = environment(service["Environment"])

    memory = int(env["BIASWATCH_MEMORY"])
    assert memory >= config.service.mem_limit  # else no combine task would ever run there
    assert int(env["BIASWATCH_MEMORY_LIMIT"]) > memory
    assert int(env["BIASWATCH_NWORKERS"]) >= 1
    writable = words(service["ReadWritePaths"])
    mounts = words(worker_unit["Unit"]["RequiresMountsFor"])
    for shared in (str(config.service.masters_dir), "/data/work"):
        assert shared in writable, shared
        assert shared in mounts, shared
    read_only = [PurePosixPath(p) for p in words(service["ReadOnlyPaths"])]
    for camera in config.cameras:
        for directory in camera.watch:
            assert any(PurePosixPath(directory).is_relative_to(p) for p in read_only), directory
            assert any(PurePosixPath(directory).is_relative_to(m) for m in mounts), directory
    assert "StateDirectory" not in service  # the catalog stays on the biaswatch machine


def test_worker_memory_limit_keeps_a_full_combine_below_dask_thresholds(
    worker_unit: dict[str, dict[str, list[str]]],
) -> None:
    """A combine using all of MEMORY stays below the --memory-limit fraction where Dask spills."""
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")  # registers the distributed.* defaults
    env = environment(worker_unit["Service"]["Environment"])
    spill = float(dask.config.get("distributed.worker.memory.spill"))
    thresholds = [
        float(dask.config.get(f"distributed.worker.memory.{name}"))
        for name in ("pause", "terminate")
    ]
    assert all(spill <= fraction for fraction in thresholds)

    peak = int(env["BIASWATCH_MEMORY"]) + WORKER_BASELINE_BYTES
    assert peak < spill * int(env["BIASWATCH_MEMORY_LIMIT"])


@pytest.mark.parametrize("path", DASK_UNITS, ids=lambda path: path.name)
def test_dask_unit_allows_what_dask_needs(path: Path) -> None:
    """A Dask unit is sandboxed like biaswatch.service but keeps network and /proc; no W+X."""
    service = parse_unit(path.read_text(encoding="utf-8"))["Service"]

    assert service["ProtectSystem"] == ["strict"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service.get("PrivateNetwork", ["no"]) == ["no"]
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(words(service["RestrictAddressFamilies"]))
    assert "IPAddressDeny" not in service
    # distributed reads /proc/meminfo when imported; ProcSubset=pid hides it.
    assert service.get("ProcSubset", ["all"]) == ["all"]
    # The kernel is compiled at install (issue 14): no code is generated at run time,
    # and nothing is cached.
    assert service["MemoryDenyWriteExecute"] == ["yes"]
    assert "CacheDirectory" not in service
    assert "XDG_CACHE_HOME" not in environment(service.get("Environment", []))


@pytest.mark.parametrize("path", DASK_UNITS, ids=lambda path: path.name)
def test_dask_unit_every_setting_group_has_a_comment(path: Path) -> None:
    """Every block of settings in a Dask unit, but Description= and [Install], follows a comment."""
    assert_every_setting_group_has_a_comment(path)
