"""Alarms: the few things a person must hear about, as warnings and an optional command.

Each alarm is a ``warning`` log event with a stable name (``alarm.no_master``,
``alarm.camera_silent``, ``alarm.master_rejected``, ``alarm.set_failed``,
``alarm.set_insufficient``) and its details. When ``[alerts] url`` is set, the alarm
is POSTed there as JSON (system/httppost.py, as notices are). When ``[alerts] command`` is set,
that program is run with the alarm as one JSON object on its standard input
and ``BIASWATCH_ALARM=<name>`` in its environment, off the main loop, within
bounds (system/runbounded.py): ``max_running`` at once, ``max_queued`` waiting (more are
logged as ``alert.dropped``), ``timeout_seconds`` each, ``max_output_bytes`` of its
standard error kept; so a slow or noisy mailer never holds the service.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import structlog

from biaswatch.catalog.store import Catalog
from biaswatch.config import Config
from biaswatch.hooks import AlertsConfig
from biaswatch.rules.nights import night_label
from biaswatch.service.notices import post_headers
from biaswatch.system.httppost import PostFailed, post_json
from biaswatch.system.runbounded import run_bounded

log = structlog.get_logger(__name__)

# Night-end checks wait this long after night_end, for the night-end combine to publish.
NIGHT_CHECK = dt.timedelta(minutes=10)


class Alarms:
    """Raise alarms: log them, and hand them to the configured command."""

    def __init__(self, alerts: AlertsConfig, counted: Callable[..., None] | None = None) -> None:
        self._alerts = alerts
        self._counted = counted  # the metrics' alarm counter (service/metrics.py)
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=alerts.max_queued)
        self._senders: list[threading.Thread] = []
        self._dropped = 0
        self._lock = threading.Lock()

    def __call__(self, name: str, **details: Any) -> None:
        """Log ``alarm.<name>`` with ``details``, and queue it for the alert command if any."""
        event = f"alarm.{name}"
        log.warning(event, **details)
        if self._counted is not None:
            self._counted(name, **details)
        if self._alerts.command or self._alerts.url:
            payload = json.dumps({"alarm": event, **details}, default=str)
            self._enqueue(event, payload)

    def _enqueue(self, event: str, payload: str) -> None:
        with self._lock:
            self._start_senders()
            try:
                self._queue.put_nowait((event, payload))
            except queue.Full:
                self._dropped += 1
                dropped = self._dropped
            else:
                return
        log.warning(
            "alert.dropped",
            alarm=event,
            dropped=dropped,
            max_queued=self._alerts.max_queued,
            action="see the alarms in the log; raise [alerts] max_queued or max_running",
        )

    def _start_senders(self) -> None:
        # Started on the first alarm: a service without alarms runs no extra threads.
        while len(self._senders) < self._alerts.max_running:
            sender = threading.Thread(
                target=self._serve, name=f"alert-{len(self._senders)}", daemon=True
            )
            sender.start()
            self._senders.append(sender)

    def _serve(self) -> None:
        while True:
            event, payload = self._queue.get()
            try:
                self._send(event, payload)
            except Exception as exc:  # one alert: log it, keep serving the others
                log.exception("alert.failed", alarm=event, error=repr(exc))
            finally:
                self._queue.task_done()

    def _send(self, event: str, payload: str) -> None:
        if self._alerts.url:
            self._post(self._alerts.url, event, payload)
        if self._alerts.command:
            self._run_command(event, payload)

    def _post(self, url: str, event: str, payload: str) -> None:
        """POST the alarm once (best effort, as the command: alarms are not queued)."""
        try:
            post_json(url, payload.encode(), post_headers(0, event), self._alerts.timeout_seconds)
        except PostFailed as exc:
            log.error("alert.failed", alarm=event, url=url, error=str(exc))
            return
        log.info("alert.sent", alarm=event, url=url)

    def _run_command(self, event: str, payload: str) -> None:
        alerts = self._alerts
        command = list(alerts.command)
        try:
            outcome = run_bounded(
                command,
                payload.encode(),
                env={**os.environ, "BIASWATCH_ALARM": event},
                timeout=alerts.timeout_seconds,
                keep=alerts.max_output_bytes,
            )
        except OSError as exc:
            log.error("alert.failed", alarm=event, command=command, error=str(exc))
            return
        stderr = outcome.stderr.decode("utf-8", errors="replace").strip()
        if outcome.status is None:
            why = f"no answer in {alerts.timeout_seconds:g} s: its process group was killed"
            log.error("alert.failed", alarm=event, command=command, error=why, stderr=stderr)
        elif outcome.status != 0:
            log.error("alert.failed", alarm=event, status=outcome.status, stderr=stderr)
        else:
            log.info("alert.sent", alarm=event)


def night_alarm(catalog: Catalog, camera: str, night: str) -> tuple[str, str] | None:
    """After a camera's night end: the alarm due (name, why), or None when all is well.

    A night without a single frame judged is a silent camera (cable, disk,
    camera program); frames but no accepted master is a night without a bias.
    """
    frames, accepted = catalog.night_summary(camera, night)
    if frames == 0:
        return "camera_silent", f"no frame from camera {camera} in night {night}"
    if accepted == 0:
        return "no_master", f"{frames} frame(s) but no accepted master for night {night}"
    return None


def night_end_check(
    config: Config, catalog: Catalog, alarms: Alarms, camera: str, now: dt.datetime
) -> None:
    """A camera's night is over (NIGHT_CHECK after night_end): raise what is due, write the page."""
    site = config.site
    night = night_label(now - NIGHT_CHECK, site.zone, site.night_rollover)
    due = night_alarm(catalog, camera, night.isoformat())
    if due is not None:
        name, why = due
        alarms(name, camera=camera, night=night.isoformat(), reason=why)
    # The morning's page, off the main loop (plots and previews take a second).
    # Imported here: matplotlib would add ~35 MiB to the service for one page a night.
    from biaswatch.publish.report import write_night_report

    threading.Thread(target=write_night_report, args=(config, night, now), daemon=True).start()
