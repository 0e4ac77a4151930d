"""The lanes' calibrations on a Dask cluster, or on local threads while it is away."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class Calibrator(Executor):
    """``concurrent.futures`` face of the cluster for the lanes' calibrations."""

    def __init__(self, client: Callable[[], Any], local: ThreadPoolExecutor) -> None:
        self._client = client  # DaskExecutor.client: None while the scheduler is away
        self._local = local

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """On the cluster when connected; on local threads while the scheduler is away."""
        client = self._client()
        if client is None:
            return self._local.submit(fn, *args, **kwargs)
        future: Future[Any] = client.get_executor(pure=False).submit(fn, *args, **kwargs)
        future.add_done_callback(_log_outcome)
        return future


# A frame's events are logged where it is examined: on a cluster, in the worker's
# journal. The service logs the outcome again so its own log tells the whole night.
_EVENTS = {"valid": "frame.calibrated", "rejected": "frame.rejected", "ignored": "frame.ignored"}


def _log_outcome(future: Future[Any]) -> None:
    if future.cancelled() or future.exception() is not None:
        return  # the intake reports it (frame.calibration_lost)
    record = future.result()
    event = _EVENTS.get(getattr(record, "status", ""))
    if event is not None:
        level = log.warning if record.status == "rejected" else log.info
        level(
            event,
            camera=record.camera,
            file=record.path,
            night=record.night,
            reason=record.reason,
            on="cluster",
        )
