"""Alarms: the few things a person must hear about, as warnings and an optional command.

Each alarm is a ``warning`` log event with a stable name (``alarm.no_master``,
``alarm.camera_silent``, ``alarm.master_rejected``, ``alarm.set_failed``,
``alarm.set_insufficient``) and its details. When ``[alerts] command`` is set,
that program is run with the alarm as one JSON object on its standard input
and ``BIASWATCH_ALARM=<name>`` in its environment, on a thread of its own with
a timeout, so a slow mailer never holds the service.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import threading
from typing import Any

import structlog

from biaswatch.catalog import Catalog
from biaswatch.config import Config
from biaswatch.nights import night_label
from biaswatch.settings import AlertsConfig

log = structlog.get_logger("biaswatch.alarms")

# Night-end checks wait this long after night_end, for the night-end combine to publish.
NIGHT_CHECK = dt.timedelta(minutes=10)


class Alarms:
    """Raise alarms: log them, and hand them to the configured command."""

    def __init__(self, alerts: AlertsConfig) -> None:
        self._alerts = alerts

    def __call__(self, name: str, **details: Any) -> None:
        """Log ``alarm.<name>`` with ``details``, and run the alert command if any."""
        event = f"alarm.{name}"
        log.warning(event, **details)
        if self._alerts.command:
            payload = json.dumps({"alarm": event, **details}, default=str)
            threading.Thread(
                target=self._send, args=(event, payload), name="alert", daemon=True
            ).start()

    def _send(self, event: str, payload: str) -> None:
        command = list(self._alerts.command)
        try:
            result = subprocess.run(
                command,
                input=payload,
                text=True,
                capture_output=True,
                timeout=self._alerts.timeout_seconds,
                env={**os.environ, "BIASWATCH_ALARM": event},
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("alert.failed", alarm=event, command=command, error=str(exc))
            return
        if result.returncode != 0:
            stderr = result.stderr.strip()[-500:]
            log.error("alert.failed", alarm=event, status=result.returncode, stderr=stderr)
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
    from biaswatch.report import write_night_report

    threading.Thread(target=write_night_report, args=(config, night, now), daemon=True).start()
