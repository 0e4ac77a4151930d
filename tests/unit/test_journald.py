"""Logs under systemd: journald's native protocol, or the <N> prefix on the journal stream."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
import structlog

from biaswatch import journald, logs

# Each test configures the root logger: conftest.py puts it back afterwards. The
# journal_stdout, journal_socket and native fixtures are conftest.py's too.
pytestmark = pytest.mark.usefixtures("restore_logging")


def configure_on(out: IO[str], monkeypatch: pytest.MonkeyPatch, level: str, sock: Path) -> None:
    """logs.configure with ``out`` as sys.stdout (set in the test: pytest's capture
    puts its own stream back between a fixture's set-up and the test's call)."""
    monkeypatch.setattr("sys.stdout", out)
    logs.configure(None, level, console=False, journal_socket=sock)


def parse_native(data: bytes) -> dict[str, str]:
    """A native-protocol datagram as fields: KEY=value lines and the binary-length form."""
    fields: dict[str, str] = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            data = rest
        else:
            (size,) = struct.unpack("<Q", rest[:8])
            fields[line.decode()] = rest[8 : 8 + size].decode()
            assert rest[8 + size : 9 + size] == b"\n"
            data = rest[9 + size :]
    return fields


def test_native_fields(native: Callable[[str], socket.socket], journal_stdout: IO[str]) -> None:
    """With the socket and the journal stream, each event is a datagram of searchable fields."""
    sock = native("info")
    log = structlog.get_logger("t").bind(camera="cryo", night="2026-11-24")
    log.warning("frame.rejected", file="a.fits", set=3, reason="not FITS")
    fields = parse_native(sock.recv(65536))
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "biaswatch"
    assert (fields["BIASWATCH_EVENT"], fields["CAMERA"], fields["NIGHT"]) == (
        "frame.rejected",
        "cryo",
        "2026-11-24",
    )
    assert (fields["SET"], fields["FILE"]) == ("3", "a.fits")
    assert json.loads(fields["MESSAGE"])["reason"] == "not FITS"
    journal_stdout.seek(0)
    assert journal_stdout.read() == ""  # nothing written twice


def test_native_multiline_value(native: Callable[[str], socket.socket]) -> None:
    """A value holding a newline travels in the binary-length form, byte for byte."""
    sock = native("debug")
    structlog.get_logger("t").debug("frame.seen", file="two\nlines.fits")
    fields = parse_native(sock.recv(65536))
    assert fields["FILE"] == "two\nlines.fits"
    assert fields["PRIORITY"] == "7"


def test_native_too_big_goes_by_memfd(native: Callable[[str], socket.socket]) -> None:
    """An event too big for one datagram is sent as a sealed memfd, as the protocol says."""
    sock = native("info")
    structlog.get_logger("t").error("set.failed", detail="x" * 400_000)
    _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    (fd,) = fds
    with os.fdopen(fd, "rb") as memfd:
        memfd.seek(0)  # the received fd shares the sender's offset: the end of its write
        fields = parse_native(memfd.read())
    assert fields["PRIORITY"] == "3"
    assert len(json.loads(fields["MESSAGE"])["detail"]) == 400_000


def test_native_refused_falls_back_to_prefix(
    journal_stdout: IO[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When journald's socket refuses a datagram, the line goes to stdout with its prefix."""
    dead = tmp_path / "socket"
    dead.touch()  # exists, but nothing listens: sendto fails with ECONNREFUSED
    configure_on(journal_stdout, monkeypatch, "info", dead)
    structlog.get_logger("t").info("service.started")
    journal_stdout.seek(0)
    line = journal_stdout.read()
    assert line.startswith("<6>{")
    assert json.loads(line[3:])["event"] == "service.started"


def test_prefix_without_socket(
    journal_stdout: IO[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the native socket, each line on the journal stream starts with its <N>."""
    configure_on(journal_stdout, monkeypatch, "debug", tmp_path / "absent")
    log = structlog.get_logger("t")
    log.debug("frame.seen")
    log.info("set.completed")
    log.warning("frame.rejected")
    log.error("set.failed")
    journal_stdout.seek(0)
    lines = journal_stdout.read().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"]
    assert [json.loads(line[3:])["event"] for line in lines] == [
        "frame.seen",
        "set.completed",
        "frame.rejected",
        "set.failed",
    ]


def test_no_prefix_when_stdout_is_not_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JOURNAL_STREAM naming another file (inherited by a child) leaves lines plain JSON."""
    with open(tmp_path / "stdout", "w+", encoding="utf-8") as out:
        monkeypatch.setenv("JOURNAL_STREAM", "1:2")
        configure_on(out, monkeypatch, "info", tmp_path / "absent")
        structlog.get_logger("t").warning("frame.rejected")
        out.seek(0)
        assert json.loads(out.read())["event"] == "frame.rejected"


def test_stream_detection() -> None:
    """JOURNAL_STREAM matches only the stream's own device:inode; junk or no fd is not."""
    with tempfile.TemporaryFile("w+") as out:
        status = os.fstat(out.fileno())
        right = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        assert journald.stdout_is_journal(out, right)
        assert not journald.stdout_is_journal(out, {"JOURNAL_STREAM": "junk"})
        assert not journald.stdout_is_journal(out, {})
    assert not journald.stdout_is_journal(io.StringIO(), right)
