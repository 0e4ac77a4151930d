"""systemd's sd_notify protocol: READY, RELOADING, WATCHDOG, STATUS, STOPPING.

One datagram to ``$NOTIFY_SOCKET`` (sd_notify(3)); a leading ``@`` names an
abstract socket. Without the variable (not under systemd) nothing is sent.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Protocol


class Notifier(Protocol):
    """Something that takes sd_notify messages such as ``READY=1``."""

    def notify(self, message: str) -> None:
        """Send one message."""


class SystemdNotifier:
    """Sends to ``$NOTIFY_SOCKET``; silently does nothing when it is unset."""

    def __init__(self, address: str | None = None) -> None:
        self._address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")

    def notify(self, message: str) -> None:
        """Send one message; failures are ignored, as sd_notify(3) allows."""
        if not self._address:
            return
        address = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), address)
        except OSError:
            pass


def watchdog_interval() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds (sd_watchdog_enabled(3)), or None if unset."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


def reloading_message(status: str) -> str:
    """``RELOADING=1`` with ``MONOTONIC_USEC=`` and ``STATUS=``, in one datagram.

    sd_notify(3), RELOADING=1: "must be accompanied by MONOTONIC_USEC=" (CLOCK_MONOTONIC
    in microseconds, in the same message); systemd >= 253 ignores a RELOADING=1 without
    it under Type=notify-reload. The reload ends with READY=1.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return f"RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS={status}"
