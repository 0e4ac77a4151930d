"""The native-protocol datagrams, stored by systemd's own code and read by journalctl.

No journald runs here, so systemd-journal-remote stands in for it: it stores the
datagrams (in the export format they share with the native protocol, plus the
timestamp journald adds) in a journal file; the real journalctl then reads that file,
for the test and for ``biaswatch log``.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from biaswatch.testing.helpers import run_cli, write_config

REMOTE = next(
    (
        path
        for path in map(Path, ("/lib/systemd", "/usr/lib/systemd"))
        if (path / "systemd-journal-remote").exists()
    ),
    None,
)
pytestmark = [
    pytest.mark.skipif(
        REMOTE is None or not Path("/usr/bin/journalctl").exists(),
        reason="needs journalctl and systemd-journal-remote (Debian: systemd-journal-remote)",
    ),
    # Each test configures the root logger (conftest.py's native): conftest.py puts it back.
    pytest.mark.usefixtures("restore_logging"),
]
START_MICROS = 1_764_900_000_000_000  # 2025-12-05 02:00:00 UTC, in µs since 1970


def datagrams_of_a_night(native: Callable[[str], socket.socket]) -> list[bytes]:
    """The datagrams three events become, stdout being the journal stream."""
    sock = native("info")
    log = structlog.get_logger("t")
    log.info("service.started")
    log.bind(camera="cryo", night="2026-11-24").warning(
        "frame.rejected", file="two\nlines.fits", reason="not FITS"
    )
    log.bind(camera="te").error("set.failed", set=7)
    return [sock.recv(65536) for _ in range(3)]


def journal_file(tmp_path: Path, datagrams: list[bytes]) -> Path:
    """The datagrams stored by systemd-journal-remote, a second apart."""
    assert REMOTE is not None
    export = b"".join(
        f"__REALTIME_TIMESTAMP={START_MICROS + i * 1_000_000}\n".encode() + data + b"\n"
        for i, data in enumerate(datagrams)
    )
    stored = tmp_path / "test.journal"
    remote = [str(REMOTE / "systemd-journal-remote"), f"--output={stored}", "-"]
    subprocess.run(remote, input=export, check=True, capture_output=True)
    return stored


def test_journalctl_reads_fields_and_priorities(
    tmp_path: Path, native: Callable[[str], socket.socket]
) -> None:
    """journalctl filters our entries by priority and by CAMERA, and gives fields back whole."""
    stored = journal_file(tmp_path, datagrams_of_a_night(native))
    read = ["journalctl", "--file", str(stored), "-o", "json", "-t", "biaswatch", "--no-pager"]
    warnings = subprocess.run([*read, "-p", "warning"], capture_output=True, text=True)
    entries = [json.loads(line) for line in warnings.stdout.splitlines()]
    assert [e["BIASWATCH_EVENT"] for e in entries] == ["frame.rejected", "set.failed"]
    cryo = subprocess.run([*read, "CAMERA=cryo"], capture_output=True, text=True)
    (entry,) = [json.loads(line) for line in cryo.stdout.splitlines()]
    assert (entry["PRIORITY"], entry["NIGHT"], entry["FILE"]) == (
        "4",
        "2026-11-24",
        "two\nlines.fits",
    )
    assert json.loads(entry["MESSAGE"])["reason"] == "not FITS"


def test_biaswatch_log_through_journalctl(
    tmp_path: Path, native: Callable[[str], socket.socket]
) -> None:
    """`biaswatch log` shows the stored entries through the real journalctl, filtered."""
    stored = journal_file(tmp_path, datagrams_of_a_night(native))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "journalctl"  # the real one, pointed at the stored file
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/journalctl --file "{stored}" "$@"\n')
    wrapper.chmod(0o755)
    config = write_config(tmp_path, service={"log_file": "-"})
    result = run_cli("log", "--config", config, "--level", "warning", env={"PATH": str(bin_dir)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[3] for line in lines] == ["frame.rejected", "set.failed"]
    assert " WARNING frame.rejected camera=cryo night=2026-11-24 " in lines[0]
    assert "camera=te" in lines[1]
    te = run_cli("log", "--config", config, "--camera", "te", env={"PATH": str(bin_dir)})
    assert [line.split()[3] for line in te.stdout.splitlines()] == [
        "service.started",
        "set.failed",
    ]
