"""``[alerts]`` and ``[notify]``: the programs and URLs biaswatch tells about events.

Alarms (service/alarms.py) are best-effort and kept in memory; notices
(service/notices.py) are queued in the catalog and retried. Both run a command with
JSON on its standard input and/or POST the same JSON to a URL (system/httppost.py).
Apart from settings.py so that each file stays short; config.py reads both tables.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field

from biaswatch.settings import Bytes, _Frozen


def parse_url(value: object) -> str | None:
    """An ``http://`` or ``https://`` URL with a host, for the JSON POST of a notice or alarm."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected a URL such as 'https://host/hook'")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
    return value.strip()


Url = Annotated[str | None, BeforeValidator(parse_url)]


class AlertsConfig(_Frozen):
    """``[alerts]``: a program run with each alarm (its arguments as a list; no shell).

    And/or a ``url`` the alarm is POSTed to as JSON (system/httppost.py), as notices are.
    """

    command: tuple[str, ...] = ()
    url: Url = None
    # The program gets this long, then its whole process group is killed; a hung
    # mailer must not pile up processes.
    timeout_seconds: float = Field(default=30.0, gt=0)
    # The end of the program's standard error kept for alert.failed; the rest is read
    # and thrown away (standard output is discarded unread). 4 KiB holds a mailer's
    # error or a Python traceback and keeps the event one journal line (journald
    # splits lines longer than LineMax=48K, journald.conf(5)).
    max_output_bytes: Bytes = 4096
    # Programs running at once; further alarms wait in a queue. A night brings a few
    # alarms per camera; 2 keeps a flood (every camera failing at once) to 2 processes.
    max_running: int = Field(default=2, ge=1, le=64)
    # Alarms waiting for a free slot; beyond this they are logged (alert.dropped with
    # a count) but their program is not run. 100 is 20 cameras x the 5 alarm kinds.
    max_queued: int = Field(default=100, ge=1)


class NotifyConfig(_Frozen):
    """``[notify]``: where downstream hears of a master published, judged or made latest.

    A ``command`` (argument list, no shell; the notice as JSON on standard input,
    ``BIASWATCH_NOTICE=<event>`` in its environment) and/or a ``url`` (HTTP POST of the
    same JSON). Neither: notices are still queued in the catalog, marked "no target".
    """

    command: tuple[str, ...] = ()
    url: Url = None
    # A receiver on the same site answers a POST in milliseconds; 10 s allows a slow
    # TLS handshake over a WAN and is short enough that a hung one only delays the queue.
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    # Tries per notice and target before it is marked failed and the next one goes:
    # with the default back-off, 8 tries wait 5+10+...+320 s = 635 s, so a receiver
    # down for ten minutes (a reboot, a redeploy) still gets every notice.
    max_tries: int = Field(default=8, ge=1, le=100)
    # The first back-off, doubling after each failed try and capped at RETRY_CAP_SECONDS:
    # the truncated exponential back-off of Google Cloud's retry strategy
    # (cloud.google.com/storage/docs/retry-strategy, "exponential backoff").
    retry_seconds: float = Field(default=5.0, gt=0, le=600)


# The longest wait between two tries of a notice: 10 minutes, so a receiver that comes
# back hears within 10 minutes however long it was away.
RETRY_CAP_SECONDS = 600.0
