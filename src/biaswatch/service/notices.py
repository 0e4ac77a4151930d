"""The notice sender: one thread delivering the catalog's queued notices to ``[notify]``.

Notices are queued by the catalog in the transaction of the change they announce
(catalog/notices.py). This thread, with its own catalog connection (SQLite connections
belong to their thread), wakes when the main loop says something may be queued and at
least every :data:`WAKE_SECONDS`. Per target (the command, the url), strictly in id
order: the head notice is tried; a failed try is retried after a back-off
(``retry_seconds``, doubling, capped at 10 minutes) stored in the catalog, so a restart
keeps the schedule, and later notices wait behind it; after ``max_tries`` it is marked
failed (``notice.failed``) and the next goes. A target that is not configured marks its
notices ``none`` ("no target"). One target failing never holds the other.

Nothing here blocks the main loop. On stop the thread ends after its current send
(bounded by ``timeout_seconds``); what is pending stays queued for the next start.
Delivery is at-least-once: see catalog/notices.py; receivers drop duplicates by the
``notice`` id (also sent as the ``Idempotency-Key`` header).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import structlog

from biaswatch import __version__
from biaswatch.catalog.notices import TARGETS, Notice, NoticeQueue
from biaswatch.catalog.store import utc_now
from biaswatch.hooks import RETRY_CAP_SECONDS, NotifyConfig
from biaswatch.system.httppost import PostFailed, post_json
from biaswatch.system.runbounded import run_bounded

log = structlog.get_logger(__name__)

# The sender looks at the queue at least this often (seconds) without a wake: a notice
# queued by `biaswatch accept` in another process reaches it within a second.
WAKE_SECONDS = 1.0
# The end of a notice command's standard error kept for notice.failed: as [alerts]'s
# max_output_bytes default, a traceback's end in one journal line.
STDERR_BYTES = 4096
# After stop, how long beyond timeout_seconds the service waits for the thread.
STOP_MARGIN_SECONDS = 2.0


class DeliveryFailed(Exception):
    """A try did not deliver the notice; the message says why, in one line."""


class NoticeTarget(Protocol):
    """Somewhere a notice is delivered: the command or the url (fakes in unit tests)."""

    def send(self, notice: Notice, body: bytes) -> None:
        """Deliver ``body`` (the notice's JSON); raise on failure."""


class CommandTarget:
    """``[notify] command``: run with the JSON on stdin and BIASWATCH_NOTICE=<event>."""

    def __init__(self, command: tuple[str, ...], timeout: float) -> None:
        self._command = list(command)
        self._timeout = timeout

    def send(self, notice: Notice, body: bytes) -> None:
        """Run the command once; DeliveryFailed unless it exits 0 in time."""
        env = {**os.environ, "BIASWATCH_NOTICE": notice.event}
        try:
            outcome = run_bounded(self._command, body, env, self._timeout, STDERR_BYTES)
        except OSError as exc:
            raise DeliveryFailed(f"cannot start {self._command[0]}: {exc}") from None
        stderr = outcome.stderr.decode("utf-8", errors="replace").strip()
        if outcome.status is None:
            why = f"no answer in {self._timeout:g} s: its process group was killed"
            raise DeliveryFailed(f"{why}; stderr: {stderr}")
        if outcome.status != 0:
            raise DeliveryFailed(f"exit status {outcome.status}; stderr: {stderr}")


def post_headers(notice_id: int, event: str) -> dict[str, str]:
    """The headers of a POSTed notice or alarm: who sends, and the id to drop duplicates by."""
    headers = {"User-Agent": f"biaswatch/{__version__}", "X-Biaswatch-Event": event}
    if notice_id > 0:
        headers["Idempotency-Key"] = str(notice_id)
    return headers


class UrlTarget:
    """``[notify] url``: an HTTP POST of the JSON (system/httppost.py)."""

    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._timeout = timeout

    def send(self, notice: Notice, body: bytes) -> None:
        """POST once; DeliveryFailed unless the answer is 2xx."""
        try:
            post_json(self._url, body, post_headers(notice.id, notice.event), self._timeout)
        except PostFailed as exc:
            raise DeliveryFailed(str(exc)) from None


def configured_targets(notify: NotifyConfig) -> dict[str, NoticeTarget | None]:
    """Each target's sender, None where ``[notify]`` leaves it unset."""
    command = CommandTarget(notify.command, notify.timeout_seconds) if notify.command else None
    url = UrlTarget(notify.url, notify.timeout_seconds) if notify.url else None
    return {"command": command, "url": url}


def back_off(notify: NotifyConfig, tries: int) -> float:
    """Seconds before the next try after ``tries`` failed ones: doubling, capped."""
    return min(notify.retry_seconds * 2.0 ** (tries - 1), RETRY_CAP_SECONDS)


class Delivery:
    """One pass over the queue: each target's due notices, in id order."""

    def __init__(
        self,
        queue: NoticeQueue,
        targets: Mapping[str, NoticeTarget | None],
        notify: NotifyConfig,
        now: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._queue = queue
        self._targets = targets
        self._notify = notify
        self._now = now

    def deliver_due(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Send what is due to each target, until its head must wait or ``stopping()``."""
        for target in TARGETS:
            while not stopping() and self._next(target):
                pass

    def _next(self, target: str) -> bool:
        """Deal with the target's head notice; whether the one behind it may go now."""
        notice = self._queue.head(target)
        if notice is None:
            return False
        sender = self._targets.get(target)
        if sender is None:
            self._queue.settle(target, notice.id, "none", notice.tries, "no target")
            return True
        if notice.next_try is not None and dt.datetime.fromisoformat(notice.next_try) > self._now():
            return False
        return self._try(target, sender, notice)

    def _try(self, target: str, sender: NoticeTarget, notice: Notice) -> bool:
        bound = log.bind(notice=notice.id, notice_event=notice.event, target=target)
        start = time.monotonic()
        tries = notice.tries + 1
        try:
            sender.send(notice, json.dumps(notice.body, default=str).encode())
        except Exception as exc:  # one notice's try: counted, logged, retried or given up
            error = str(exc) if isinstance(exc, DeliveryFailed) else repr(exc)
            if tries >= self._notify.max_tries:
                self._queue.settle(target, notice.id, "failed", tries, error)
                bound.error("notice.failed", tries=tries, error=error, action=_GAVE_UP)
                return True
            wait = back_off(self._notify, tries)
            when = self._now() + dt.timedelta(seconds=wait)
            self._queue.schedule_retry(target, notice.id, tries, when, error)
            bound.warning("notice.retry", tries=tries, error=error, retry_seconds=wait)
            return False
        self._queue.settle(target, notice.id, "sent", tries, None)
        bound.info("notice.sent", tries=tries, seconds=round(time.monotonic() - start, 3))
        return True


_GAVE_UP = "marked failed in the catalog; the next notice goes. Fix the receiver"


class NoticeSender:
    """The service's notice thread: started after recovery, stopped before the catalog closes."""

    def __init__(
        self,
        catalog: Path,
        notify: NotifyConfig,
        now: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._catalog = catalog
        self._notify = notify
        self._now = now
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread: notices queued while the service was stopped go first."""
        self._thread = threading.Thread(
            target=self._deliver_until_stopped, name="notices", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """Something may have been queued: look now rather than within WAKE_SECONDS."""
        self._wake.set()

    def stop(self) -> None:
        """End the thread after its current send; pending notices stay queued."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return
        self._thread.join(self._notify.timeout_seconds + STOP_MARGIN_SECONDS)
        if self._thread.is_alive():
            log.warning("notice.stop_late", action="left running; its notice stays pending")

    def _deliver_until_stopped(self) -> None:
        queue = NoticeQueue(self._catalog)
        try:
            delivery = Delivery(queue, configured_targets(self._notify), self._notify, self._now)
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    delivery.deliver_due(self._stop.is_set)
                except Exception:  # one pass: the catalog busy or unreadable; try again
                    log.exception("notice.pass_failed", action="tried again within a second")
                self._wake.wait(WAKE_SECONDS)
        finally:
            queue.close()
