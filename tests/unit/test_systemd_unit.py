"""The production systemd units (systemd/*.service) and the example config.

systemd is not PID 1 here, so the units cannot be started; these tests check
what ``systemd-analyze`` can prove offline (the units load cleanly and their
sandboxes rate SAFE, or OK for the networked Dask ones) and that the units and
systemd/config.toml agree. The Dask units' commands are also run as written,
outside systemd, against the installed ``distributed``.
"""

from __future__ import annotations

import json
import operator
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from biaswatch.config import load_config
from biaswatch.testing.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "biaswatch.service"
CONFIG = ROOT / "systemd" / "config.toml"
PRODUCTION_EXEC = "/opt/biaswatch/venv/bin/biaswatch"
EX_CONFIG = 78
SCHEDULER_UNIT = ROOT / "systemd" / "biaswatch-dask-scheduler.service"
WORKER_UNIT = ROOT / "systemd" / "biaswatch-dask-worker.service"
DASK_UNITS = [SCHEDULER_UNIT, WORKER_UNIT]
# The dask CLI of the venv biaswatch.service runs from (distributed is installed there).
PRODUCTION_DASK = str(PurePosixPath(PRODUCTION_EXEC).with_name("dask"))
WORKER_ENV_FILE = "/etc/biaswatch/dask-worker.env"
# A worker process's own size before a combine: interpreter, distributed, biaswatch and
# the compiled kernel (235 MB measured with distributed 2026.8.0). A combine then uses
# up to mem_limit on top (tests/unit/test_combine.py checks that bound).
WORKER_BASELINE_BYTES = 250_000_000
# systemd-analyze security findings the Dask units may have beyond biaswatch.service's:
# they are network servers and clients, and distributed reads /proc/meminfo at import.
NETWORK_AND_PROC_FINDINGS = {
    "PrivateNetwork=",
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "IPAddressDeny=",
    "ProcSubset=",
}

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


def assert_every_setting_group_has_a_comment(path: Path) -> None:
    """Fail on a block of settings, other than Description= and WantedBy=, with no comment."""
    previous = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        is_setting = "=" in stripped and not stripped.startswith(("#", ";"))
        starts_block = previous == "" or previous.startswith("[")
        if is_setting and starts_block:
            key = stripped.partition("=")[0]
            assert key in {"Description", "WantedBy"}, (
                f"{path.name} line {number}: {key}= has no comment"
            )
        previous = stripped


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


def current_dask() -> list[str]:
    """The dask command of the environment running the tests (distributed installs it)."""
    beside_python = Path(sys.executable).with_name("dask")
    if beside_python.is_file():
        return [str(beside_python)]
    on_path = shutil.which("dask")
    if on_path:
        return [on_path]
    return [sys.executable, "-m", "dask"]


def environment(values: list[str]) -> dict[str, str]:
    """The variables that a unit's Environment= lines set, later lines winning."""
    env: dict[str, str] = {}
    for value in values:
        for assignment in shlex.split(value):
            name, sep, content = assignment.partition("=")
            assert sep, f"not NAME=VALUE: {assignment!r}"
            env[name] = content
    return env


def expand(word: str, env: dict[str, str]) -> str:
    """One ExecStart= word with its ${NAME} references replaced as systemd does."""
    return re.sub(r"\$\{(\w+)\}", lambda match: env[match.group(1)], word)


def option(command: list[str], flag: str) -> str:
    """The value after flag, which must occur exactly once in command."""
    assert command.count(flag) == 1, f"{flag} in {command}"
    return command[command.index(flag) + 1]


def with_option(command: list[str], flag: str, value: str) -> list[str]:
    """command with the value after flag replaced."""
    index = command.index(flag) + 1
    return [*command[:index], value, *command[index + 1 :]]


def security_findings(path: Path) -> set[str]:
    """The names of the exposures that systemd-analyze security --offline reports for a unit."""
    result = run("systemd-analyze", "security", "--offline=true", "--json=short", str(path))
    assert result.returncode == 0, result.stderr
    return {item["name"] for item in json.loads(result.stdout) if item["set"] is False}


@pytest.fixture(scope="module")
def scheduler_unit() -> dict[str, dict[str, list[str]]]:
    """The shipped scheduler unit, parsed."""
    return parse_unit(SCHEDULER_UNIT.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def worker_unit() -> dict[str, dict[str, list[str]]]:
    """The shipped worker unit, parsed."""
    return parse_unit(WORKER_UNIT.read_text(encoding="utf-8"))


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
def test_dask_unit_allows_what_dask_and_numba_need(path: Path) -> None:
    """A Dask unit is sandboxed like biaswatch.service but keeps network, /proc, W+X and a cache."""
    service = parse_unit(path.read_text(encoding="utf-8"))["Service"]

    assert service["ProtectSystem"] == ["strict"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service.get("PrivateNetwork", ["no"]) == ["no"]
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(words(service["RestrictAddressFamilies"]))
    assert "IPAddressDeny" not in service
    # distributed reads /proc/meminfo when imported; ProcSubset=pid hides it.
    assert service.get("ProcSubset", ["all"]) == ["all"]
    # Importing numba fails under MemoryDenyWriteExecute=yes.
    assert service["MemoryDenyWriteExecute"] == ["no"]
    # numba's cache=True needs a writable cache: the unit's own CacheDirectory=.
    [cache] = words(service["CacheDirectory"])
    assert environment(service["Environment"])["XDG_CACHE_HOME"] == f"/var/cache/{cache}"


@pytest.mark.parametrize("path", DASK_UNITS, ids=lambda path: path.name)
def test_dask_unit_every_setting_group_has_a_comment(path: Path) -> None:
    """Every block of settings in a Dask unit, but Description= and [Install], follows a comment."""
    assert_every_setting_group_has_a_comment(path)


class _Started:
    """Processes started from the units' commands, stopped (SIGTERM, then SIGKILL) at exit."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.processes.append((process, log))

    def stop(self) -> None:
        for process, log in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(timeout=10)
            # Shown by pytest only when the test fails.
            print(f"--- {log.name}\n" + log.read_text(encoding="utf-8", errors="replace")[-4000:])


@pytest.fixture
def started(tmp_path: Path) -> Iterator[_Started]:
    """Start processes for a test and stop every one of them afterwards."""
    processes = _Started(tmp_path)
    try:
        yield processes
    finally:
        processes.stop()


def test_unit_commands_make_a_cluster_that_runs_a_combine_sized_task(
    tmp_path: Path,
    started: _Started,
    scheduler_unit: dict[str, dict[str, list[str]]],
    worker_unit: dict[str, dict[str, list[str]]],
) -> None:
    """The units' commands, run as written (ports moved), make workers that take the combines."""
    distributed = pytest.importorskip("distributed")
    port = free_port()
    scheduler = shlex.split(scheduler_unit["Service"]["ExecStart"][0])
    scheduler = with_option(scheduler, "--port", str(port))
    scheduler = with_option(scheduler, "--dashboard-address", f"127.0.0.1:{free_port()}")
    defaults = environment(worker_unit["Service"]["Environment"])
    variables = {**defaults, "BIASWATCH_SCHEDULER": f"tcp://127.0.0.1:{port}"}
    worker = [
        expand(word, variables) for word in shlex.split(worker_unit["Service"]["ExecStart"][0])
    ]
    # Dask's scratch space (default /tmp/dask-scratch-space) goes to tmp_path.
    env = {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(tmp_path)}

    started.start("scheduler", [*current_dask(), *scheduler[1:], "--host", "127.0.0.1"], env)
    started.start("worker", [*current_dask(), *worker[1:]], env)

    nworkers = int(defaults["BIASWATCH_NWORKERS"])
    with distributed.Client(f"tcp://127.0.0.1:{port}", timeout=30) as client:
        client.wait_for_workers(nworkers, timeout=90)
        workers = list(client.scheduler_info()["workers"].values())
        assert len(workers) == nworkers
        for info in workers:
            assert info["nthreads"] == 1
            assert info["resources"] == {"MEMORY": float(defaults["BIASWATCH_MEMORY"])}
            assert info["memory_limit"] == int(defaults["BIASWATCH_MEMORY_LIMIT"])
        # A task asking for MEMORY = the example config's mem_limit, as each combine does.
        mem_limit = load_config(CONFIG).service.mem_limit
        task = client.submit(operator.add, 1, 2, resources={"MEMORY": mem_limit}, pure=False)
        assert task.result(timeout=60) == 3
