"""What the systemd unit tests of every tier share: the shipped units' paths, a unit-file
parser and systemd-analyze runs (tests/unit, tests/commands and tests/service import it;
tests/ is on sys.path as the folder of the root conftest.py)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
