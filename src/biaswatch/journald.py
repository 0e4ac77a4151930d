"""Logging to journald: the native protocol, or a ``<N>`` priority prefix on stdout.

Under systemd with ``log_file = "-"`` the JSON lines go to the journal. Plain lines
carry no priority, so ``journalctl -p warning`` would show nothing. Two ways to
give them one, both without python-systemd:

- the native protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL): one datagram per event
  to ``/run/systemd/journal/socket``, holding ``KEY=value`` fields: MESSAGE (the
  JSON line, so the event stays whole), PRIORITY, SYSLOG_IDENTIFIER, and the event
  name and bound context as searchable fields (``journalctl BIASWATCH_EVENT=...``,
  ``journalctl CAMERA=cryo``);
- the stream prefix (sd-daemon(3)): ``<4>`` before the line; journald takes it as
  the priority and strips it (SyslogLevelPrefix=yes, systemd.exec(5)'s default).

Stdout is the journal when ``$JOURNAL_STREAM`` names its device and inode
(systemd.exec(5), sd_journal_stream_fd(3)); otherwise nothing here is used (a
terminal or a pipe started from a session that inherited the variable keeps plain
lines). The shipped unit's sandbox allows this socket: it is a path-bound AF_UNIX
socket (RestrictAddressFamilies=AF_UNIX), reachable from a private network namespace
(PrivateNetwork=yes isolates only abstract sockets), as NOTIFY_SOCKET already is.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import IO

SOCKET = Path("/run/systemd/journal/socket")
IDENTIFIER = "biaswatch"

# syslog(3) priorities, as sd-daemon(3) lists them: 2 crit, 3 err, 4 warning, 6 info, 7 debug.
_PRIORITIES = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "info": 6, "debug": 7}
# Bound context keys that become journal fields (names: A-Z, 0-9 and _, not leading _).
_CONTEXT_FIELDS = {"event": "BIASWATCH_EVENT", "camera": "CAMERA", "night": "NIGHT"}
_CONTEXT_FIELDS |= {"set": "SET", "file": "FILE"}


def priority(level: str) -> int:
    """The syslog priority of a structlog/logging level name (6, info, when unknown)."""
    return _PRIORITIES.get(level.lower(), 6)


def stdout_is_journal(stream: IO[str], environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (``$JOURNAL_STREAM``)."""
    dev, _, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        status = os.fstat(stream.fileno())
        return (status.st_dev, status.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        return False  # no fd (a test's capture), or JOURNAL_STREAM absent or malformed


def encode(fields: Mapping[str, str]) -> bytes:
    """Fields in the native protocol's form: ``KEY=value`` lines; values with a newline
    as ``KEY``, a little-endian 64-bit length, the bytes and a newline."""
    parts: list[bytes] = []
    for key, value in fields.items():
        data = value.encode("utf-8", "surrogateescape")
        if b"\n" in data:
            parts.append(key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(key.encode() + b"=" + data + b"\n")
    return b"".join(parts)


def fields_of(line: str, level: str) -> dict[str, str]:
    """The journal fields of one rendered JSON event line."""
    fields = {"MESSAGE": line, "PRIORITY": str(priority(level)), "SYSLOG_IDENTIFIER": IDENTIFIER}
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return fields
    if isinstance(event, dict):
        for key, name in _CONTEXT_FIELDS.items():
            if key in event:
                value = event[key]
                fields[name] = value if isinstance(value, str) else json.dumps(value)
    return fields


class PrefixHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Each formatted line with its ``<N>`` priority prefix, for a journal stream."""

    def format(self, record: logging.LogRecord) -> str:
        """``<N>`` then the formatter's line (each line, if it spans several)."""
        text = super().format(record)
        mark = f"<{priority(record.levelname)}>"
        return "\n".join(mark + line for line in text.split("\n"))


class NativeHandler(logging.Handler):
    """One datagram per record to journald's native socket; the prefixed line to
    ``fallback`` if the socket refuses it (journald restarting), so no line is lost."""

    def __init__(self, path: Path, fallback: IO[str]) -> None:
        super().__init__()
        self._path = str(path)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._fallback = PrefixHandler(fallback)

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # logging's name
        """The formatter for both the datagrams and the fallback lines."""
        super().setFormatter(fmt)
        self._fallback.setFormatter(fmt)

    def emit(self, record: logging.LogRecord) -> None:
        """Send the record; on a refused socket, write it to the fallback stream."""
        try:
            data = encode(fields_of(self.format(record), record.levelname))
            self._send(data)
        except OSError:
            self._fallback.emit(record)
        except Exception:  # logging's contract: a handler never raises
            self.handleError(record)

    def _send(self, data: bytes) -> None:
        try:
            self._socket.sendto(data, self._path)
        except OSError as error:
            if error.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            # Too big for one datagram: the protocol's memfd form, sealed, fd passed alone.
            fd = os.memfd_create("biaswatch-journal", os.MFD_ALLOW_SEALING)
            try:
                os.write(fd, data)
                seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
                # sendmsg, not socket.send_fds: 3.11's send_fds drops its address argument.
                rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
                self._socket.sendmsg([b""], rights, 0, self._path)
            finally:
                os.close(fd)

    def close(self) -> None:
        """Close the socket (not the fallback stream: it is stdout)."""
        self._socket.close()
        super().close()


def journal_handler(stream: IO[str], path: Path = SOCKET) -> logging.Handler:
    """The native handler when journald's socket exists, else the ``<N>`` prefix."""
    if path.exists():
        return NativeHandler(path, stream)
    return PrefixHandler(stream)
