"""The soak's service process: ``biaswatch run`` in its own session, and /proc helpers.

ServiceRunner starts the real service with a NOTIFY_SOCKET of its own (a start
counts as good once READY=1 comes), optionally inside a memory cgroup, restarts it
as often as the chaos asks, and reads the events each run logged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from soak_chaos import MemoryCgroup, NotifySocket

# --- processes --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proc:
    """One line of /proc: a process's parent, group, state and command."""

    pid: int
    ppid: int
    pgrp: int
    state: str


def proc_table() -> dict[int, Proc]:
    """Every process visible in /proc (psutil is not installed)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        table[pid] = Proc(pid, int(fields[1]), int(fields[2]), fields[0])
    return table


def grandchildren(pid: int) -> list[int]:
    """Live processes two or more levels below ``pid``: the combine children.

    The service's children are the fork server and the resource tracker; every
    combine child is forked by the fork server.
    """
    table = proc_table()
    children: dict[int, list[int]] = {}
    for proc in table.values():
        if proc.state != "Z":
            children.setdefault(proc.ppid, []).append(proc.pid)
    found: list[int] = []
    level = children.get(pid, [])
    while level:
        level = [c for p in level for c in children.get(p, [])]
        found += level
    return found


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    return [p.pid for p in proc_table().values() if p.pgrp == pgid and p.state != "Z"]


def command_line(pid: int) -> str:
    """A process's command line, for messages."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160]


class ServiceRunner:
    """``biaswatch run`` in its own session, restarted as often as the chaos asks."""

    def __init__(self, config: Path, work: Path, cgroup: MemoryCgroup | None = None) -> None:
        self.config = config
        self.log_path = work / "log" / "biaswatch.jsonl"
        self._output: IO[bytes] = open(work / "service-output.txt", "ab")  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.starts = 0
        self.ready_starts = 0
        self.notify = NotifySocket()
        self._ready_mark = 0
        self.cgroup = cgroup

    def environment(self) -> dict[str, str]:
        """The service's environment, without the notify socket."""
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        return env

    def start(self) -> None:
        """Start a new service process; its log starts at the current end of the log."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._ready_mark = self.notify.mark()
        env = {**self.environment(), "NOTIFY_SOCKET": self.notify.path}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "biaswatch", "run", "--config", str(self.config)],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own group: killpg reaches the combine children too
        )
        if self.cgroup is not None:
            # Moved at once, before the interpreter has even imported numpy: its
            # fork server and combine children are born inside the group.
            self.cgroup.add(self.proc.pid)
        self.starts += 1

    def wait_ready(self, timeout: float) -> bool:
        """Wait for READY=1 from the current process; False if it ended or timed out first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.notify.ready_since(self._ready_mark):
                self.ready_starts += 1
                return True
            if self.exit_status() is not None:
                return False
            time.sleep(0.1)
        return False

    @property
    def pid(self) -> int:
        """The running service's pid."""
        assert self.proc is not None
        return self.proc.pid

    def exit_status(self) -> int | None:
        """None while it runs, else its exit status."""
        assert self.proc is not None
        return self.proc.poll()

    def events_since_start(self) -> list[dict[str, Any]]:
        """The log's events written since the current process started."""
        if not self.log_path.exists():
            return []
        with open(self.log_path, "rb") as stream:
            stream.seek(self._log_offset)
            lines = stream.read().decode(errors="replace").splitlines()
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line still being written
        return events

    def wait_event(self, name: str, timeout: float) -> bool:
        """Wait for an event of this run; False after ``timeout`` or if the service ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.exit_status() is None:
            if any(e.get("event") == name for e in self.events_since_start()):
                return True
            time.sleep(0.1)
        return False

    def kill_group(self) -> None:
        """SIGKILL the service's whole process group and reap the service."""
        assert self.proc is not None
        os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM and wait; returns (exit status or None on timeout, seconds taken)."""
        assert self.proc is not None
        begun = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            status: int | None = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
        return status, time.monotonic() - begun

    def close(self) -> None:
        """Kill whatever is left of the current process group; close the output file."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill_group()
        self._output.close()
        self.notify.close()
